# Sourced by the bench scripts: percentiles of a sockperf --full-log, and their plot.
# pcts CSV -> lines "nines percentile latency", nines = -log10(1 - p/100) (p50 at 0.30, p99 at 2),
# the maximum at x = 4.5.
pcts() {
  awk -F', *' '/^[0-9]+, / && $4 + 0 > 0 {print $4 + 0}' "$1" | sort -g | awk '
    {v[NR] = $1}
    END {
      if (NR == 0) exit
      split("1 5 10 25 50 75 90 95 99 99.5 99.9 99.95 99.99", P, " ")
      for (i = 1; i in P; i++) {
        p = P[i]; k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; if (k > NR) k = NR
        printf "%.6g %s %.6g\n", -log(1 - p / 100) / log(10), p, v[k]
      }
      printf "4.5 max %.6g\n", v[NR]
    }'
}

# percentile_plot OUT.png TITLE SERIES...: one line per SERIES "DATFILE|LABEL|COLOR" (DATFILE from
# pcts), latency on a log scale against the percentile. Fails if gnuplot does.
percentile_plot() {
  local out=$1 title=$2 s plots=() f l c
  shift 2
  for s in "$@"; do
    IFS='|' read -r f l c <<< "$s"
    plots+=("\"$f\" using 1:3 with linespoints pt 7 ps 0.7 lw 2 lc rgb \"$c\" title \"$l\"")
  done
  gnuplot <<GNUPLOT
set terminal pngcairo size 1000,600 font "DejaVu Sans,11" noenhanced
set encoding utf8
set output "$out"
set title "$title"
set xlabel "percentile"
set ylabel "half round-trip latency (µs, log scale)"
set logscale y 10
set format y "%g"
set grid xtics ytics
set key top left box opaque
set xtics ("p50" 0.30103, "p90" 1, "p99" 2, "p99.9" 3, "p99.99" 4, "max" 4.5)
plot $(IFS=,; echo "${plots[*]}")
GNUPLOT
}
