#!/usr/bin/env bash
# AF_XDP datapath benchmark (a benchmark, not a test): sockperf across a veth pair between two
# network namespaces, the kernel's UDP vs accel with ACCEL_XDP=1 on both ends, the XDP program
# attached in each mode of XDP_MODES (native, generic), alternating, REPS repetitions.
#
#  1. ping-pong, UDP 64 B: busy (--nonblocked on both sides; accel with ACCEL_PROFILE=latency)
#     and blocking (accel with the default profile); p50/p99/p99.9/avg of the half round trip,
#     median over repetitions, accel/kernel ratio. Variants: kernel, accel-M for M in XDP_MODES.
#  2. throughput, UDP 64 B and 1472 B, --pps max, busy receiver (--nonblocked on both sides):
#     client msg/s, the server's received count (sockperf sr prints it on SIGINT), loss = sent -
#     received, received msg/s. Variants: kernel, accel-M (ACCEL_PROFILE=latency) and accel-tp-M
#     (ACCEL_PROFILE=throughput: larger buffers, one TX kick per 32 sends, plus TP_EXTRA: by
#     default ACCEL_RX_WRE=2048, because in copy mode the profile's 16384-deep fill ring makes
#     the kernel copy into cold frames; see configuration.md), for M in XDP_MODES.
#  3. the highest rate at which nothing is lost, 64 B and 1472 B, per repetition and throughput
#     variant, right after that repetition's unpaced runs: the unpaced run's received msg/s if it
#     lost nothing; else paced runs (--mps) at falling fractions (LOSSLESS_FRACTIONS) of the rate
#     the same variant sent unpaced in that repetition, until one loses nothing (its received
#     msg/s). Median over repetitions, ratio to the kernel's.
#  4. a targets table (issue 4): busy p50 <= 0.65 x kernel per XDP mode; highest lossless rate
#     >= 2 x kernel, 64 B and 1472 B, per accel variant (accel-M and accel-tp-M).
#
# Per repetition, every test runs each variant in turn (kernel first, then accel-M, then
# accel-tp-M), the order reversed every other repetition.
#
# The namespaces (bxa-$$ with 10.207.0.1 on xa, bxb-$$ with 10.207.0.2 on xb, one queue each
# way) are this script's own; processes enter them with `nsenter --net` (not `ip netns exec`,
# which hides /sys/fs/bpf). Server (sockperf sr) in A on core SERVER_CPU, client in B on
# CLIENT_CPU. Every process is bounded by `timeout`; the trap kills only the processes this
# script started and deletes the namespaces (which detaches the XDP programs).
#
# Results replace the section between <!-- xdp:begin --> and <!-- xdp:end --> of
# docs/benchmarks.md (and docs/img/xdp-percentiles.png).
#
# Environment: REPS (3), DURATION (3, seconds per sockperf run), XDP_MODES ("native generic"),
#              LOSSLESS_FRACTIONS ("1.0 0.9 0.8 0.7 0.6 0.45 0.3 0.2 0.1", of the unpaced rate),
#              TP_EXTRA ("ACCEL_RX_WRE=2048", more environment for accel-tp-M),
#              NO_BUILD=1 to skip cargo build, KEEP=1 to keep raw outputs, SERVER_CPU (0),
#              CLIENT_CPU (1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

REPS=${REPS:-3}
DURATION=${DURATION:-3}
XDP_MODES=${XDP_MODES:-native generic}
TP_EXTRA=${TP_EXTRA-ACCEL_RX_WRE=2048}
LOSSLESS_FRACTIONS=${LOSSLESS_FRACTIONS:-1.0 0.9 0.8 0.7 0.6 0.45 0.3 0.2 0.1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DOC=$ROOT/docs/benchmarks.md
PCT_REL=img/xdp-percentiles.png
PCT=$ROOT/docs/$PCT_REL

for tool in cargo sockperf taskset timeout nsenter ip awk gnuplot; do
  command -v "$tool" >/dev/null || { echo "bench-xdp: $tool missing" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench-xdp: needs root (namespaces, XDP)" >&2; exit 1; }

if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release --workspace
fi
LIB=$ROOT/target/release/libaccel.so
[ -f "$LIB" ] || { echo "bench-xdp: $LIB missing: cargo build --release --workspace" >&2; exit 1; }
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ', with uncommitted changes')"

while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(\(ACCEL\|VMA\)_[A-Za-z0-9_]*\)=.*/\1/p')
unset LD_PRELOAD

NSA=bxa-$$
NSB=bxb-$$
A_IP=10.207.0.1
B_IP=10.207.0.2
WORK=$(mktemp -d /tmp/accel-bench-xdp.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  ip netns del "$NSA" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "bench-xdp: raw outputs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NSA"
ip netns add "$NSB"
ip -n "$NSA" link add xa numrxqueues 1 numtxqueues 1 type veth peer xb numrxqueues 1 numtxqueues 1
ip -n "$NSA" link set xb netns "$NSB"
ip -n "$NSA" addr add "$A_IP/24" dev xa
ip -n "$NSB" addr add "$B_IP/24" dev xb
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set xa up
ip -n "$NSB" link set xb up
# Both neighbour entries known before the first run (the first datagrams of a fresh pair go
# through the kernel while it resolves them).
ip netns exec "$NSB" ping -c 1 -W 2 "$A_IP" > /dev/null

RES=$WORK/results.tsv      # test <TAB> variant <TAB> rep <TAB> metric <TAB> value
: > "$RES"
FAIL=$WORK/failures.md
: > "$FAIL"
log() { printf 'bench-xdp: %s\n' "$*" >&2; }
put() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RES"; }
val() { # test variant rep metric -> the value recorded last (NA if none)
  awk -F'\t' -v t="$1" -v v="$2" -v r="$3" -v m="$4" '$1 == t && $2 == v && $3 == r && $4 == m {x = $5} END {print (x == "" ? "NA" : x)}' "$RES"
}
fail() {
  log "FAILED: $1"
  { printf -- '- %s\n\n```\n' "$1"; tail -n 15 "$2" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g'; printf '```\n\n'; } >> "$FAIL"
}
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }

# variant: kernel | accel-M | accel-tp-M (M in XDP_MODES); profile: busy | blocking -> ENVV.
# accel-tp-M (throughput tests only) is ACCEL_PROFILE=throughput whatever the profile argument.
env_for() {
  case $1 in
    kernel) ENVV=(env -u LD_PRELOAD) ;;
    accel-tp-*) ENVV=(env LD_PRELOAD="$LIB" ACCEL_XDP=1 ACCEL_XDP_MODE="${1#accel-tp-}" ACCEL_PROFILE=throughput $TP_EXTRA) ;;
    accel-*) ENVV=(env LD_PRELOAD="$LIB" ACCEL_XDP=1 ACCEL_XDP_MODE="${1#accel-}")
             if [ "$2" = busy ]; then ENVV+=(ACCEL_PROFILE=latency); fi ;;
  esac
}
env_text() {
  case $1 in
    kernel) echo "" ;;
    accel-tp-*) echo "LD_PRELOAD=target/release/libaccel.so ACCEL_XDP=1 ACCEL_XDP_MODE=${1#accel-tp-} ACCEL_PROFILE=throughput${TP_EXTRA:+ $TP_EXTRA} " ;;
    accel-*) echo "LD_PRELOAD=target/release/libaccel.so ACCEL_XDP=1 ACCEL_XDP_MODE=${1#accel-}$([ "$2" = busy ] && echo " ACCEL_PROFILE=latency") " ;;
  esac
}

PORT=$((20000 + $$ % 20000))
SRV_PID=""
start_server() { # out-file, env..., -- sockperf args...
  local out=$1; shift
  local envv=()
  while [ "$1" != -- ]; do envv+=("$1"); shift; done
  shift
  timeout -k 5 $((DURATION + 60)) nsenter --net=/var/run/netns/"$NSA" taskset -c "$SERVER_CPU" "${envv[@]}" sockperf "$@" > "$out" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
}
wait_port() {
  local i
  for i in $(seq 50); do
    ip netns exec "$NSA" ss -Hlun "( sport = :$1 )" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  log "port $1: nothing bound after 5 s"
  return 1
}
stop_server() {
  local pid=$1 out=$2 i
  # The process under timeout/nsenter/taskset/env is sockperf itself (they exec): signal the
  # group's leaf through timeout, which forwards SIGINT.
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail "server (timeout pid $pid) still running 5 s after SIGINT; killed" "$out"
    kill -TERM "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
client() { # out-file, env..., -- sockperf args...
  local out=$1; shift
  local envv=()
  while [ "$1" != -- ]; do envv+=("$1"); shift; done
  shift
  timeout -k 5 $((DURATION + 30)) nsenter --net=/var/run/netns/"$NSB" taskset -c "$CLIENT_CPU" "${envv[@]}" sockperf "$@" > "$out" 2>&1
}

# pp TEST(busy|blocking) VARIANT REP
pp() {
  local test=$1 v=$2 rep=$3 nb=() flog=()
  if [ "$test" = busy ]; then nb=(--nonblocked); fi
  # every sample of the last repetition's busy runs, for the percentile plot
  if [ "$test" = busy ] && [ "$rep" = "$REPS" ]; then flog=(--full-log "$WORK/pp-busy-$v.csv"); fi
  env_for "$v" "$test"
  PORT=$((PORT + 1))
  local srv=$WORK/pp-$test-$v-$rep.server out=$WORK/pp-$test-$v-$rep.client rc=0
  start_server "$srv" "${ENVV[@]}" -- sr -i "$A_IP" -p "$PORT" "${nb[@]}"
  wait_port "$PORT" || true
  client "$out" "${ENVV[@]}" -- pp -i "$A_IP" -p "$PORT" -m 64 -t "$DURATION" --mps 3000000 "${nb[@]}" "${flog[@]}" || rc=$?
  stop_server "$SRV_PID" "$srv"
  local p50 p99 p999 avg
  p50=$(strip "$out" | awk '/percentile 50.000 =/ {print $NF}' | tail -n1)
  p99=$(strip "$out" | awk '/percentile 99.000 =/ {print $NF}' | tail -n1)
  p999=$(strip "$out" | awk '/percentile 99.900 =/ {print $NF}' | tail -n1)
  avg=$(strip "$out" | awk '/Summary: Latency is/ {print $(NF-1)}' | tail -n1)
  if [ "$rc" != 0 ] || [ -z "$p50" ]; then
    fail "ping-pong $test $v rep $rep: client exit status $rc: \`$(env_text "$v" "$test")sockperf pp -i $A_IP -p $PORT -m 64 -t $DURATION --mps 3000000 ${nb[*]}\`" "$out"
    p50=NA p99=NA p999=NA avg=NA
  fi
  put "pp-$test" "$v" "$rep" p50 "$p50"; put "pp-$test" "$v" "$rep" p99 "$p99"
  put "pp-$test" "$v" "$rep" p999 "$p999"; put "pp-$test" "$v" "$rep" avg "$avg"
  log "pp $test $v rep $rep: p50=$p50 p99=$p99 p99.9=$p999 avg=$avg"
}

# tp SIZE VARIANT REP [MPS [NAME]] (busy receiver: --nonblocked; MPS "max" = --pps max; results
# recorded under test NAME, tp-SIZE by default)
tp() {
  local size=$1 v=$2 rep=$3 mps=${4:-max} name=${5:-tp-$1}
  local rateopt=(--pps max)
  if [ "$mps" != max ]; then rateopt=(--mps "$mps"); fi
  env_for "$v" busy
  PORT=$((PORT + 1))
  local srv=$WORK/$name-$v-$rep.server out=$WORK/$name-$v-$rep.client rc=0
  start_server "$srv" "${ENVV[@]}" -- sr -i "$A_IP" -p "$PORT" --nonblocked
  wait_port "$PORT" || true
  client "$out" "${ENVV[@]}" -- tp -i "$A_IP" -p "$PORT" -m "$size" -t "$DURATION" "${rateopt[@]}" --nonblocked || rc=$?
  sleep 0.5
  stop_server "$SRV_PID" "$srv"
  local sent secs rate recvd
  sent=$(strip "$out" | awk '/Total of .* messages sent in/ {print $4}' | tail -n1)
  secs=$(strip "$out" | awk '/Total of .* messages sent in/ {print $(NF-1)}' | tail -n1)
  rate=$(strip "$out" | awk '/Summary: Message Rate is/ {print $(NF-1)}' | tail -n1)
  recvd=$(strip "$srv" | awk '/messages received and handled/ {print $3}' | tail -n1)
  if [ "$rc" != 0 ] || [ -z "$sent" ] || [ -z "$rate" ]; then
    fail "throughput $size B $v rep $rep ${rateopt[*]}: client exit status $rc: \`$(env_text "$v" busy)sockperf tp -i $A_IP -p $PORT -m $size -t $DURATION ${rateopt[*]} --nonblocked\`" "$out"
    sent=NA secs=NA rate=NA
  fi
  [ -n "$recvd" ] || { fail "throughput $size B $v rep $rep ${rateopt[*]}: no received count from the server" "$srv"; recvd=NA; }
  local loss=NA lossp=NA rxrate=NA
  if [ "$sent" != NA ] && [ "$recvd" != NA ]; then
    loss=$((sent - recvd))
    lossp=$(awk -v l="$loss" -v s="$sent" 'BEGIN {printf "%.3f", s ? 100 * l / s : 0}')
    rxrate=$(awk -v r="$recvd" -v t="$secs" 'BEGIN {printf "%.0f", r / t}')
  fi
  put "$name" "$v" "$rep" rate "$rate"; put "$name" "$v" "$rep" loss "$loss"
  put "$name" "$v" "$rep" lossp "$lossp"; put "$name" "$v" "$rep" rxrate "$rxrate"
  log "tp $size $v rep $rep mps $mps: rate=$rate sent=$sent received=$recvd loss=$loss ($lossp%)"
}

# The highest rate without loss, SIZE, VARIANT, REP: the unpaced run of this repetition if it lost
# nothing (a run without loss at the highest rate there is); else paced at falling fractions of
# the rate it sent, until a run loses nothing. Records lossless-SIZE: rate (received msg/s, NA if
# none) and how: "unpaced", the paced --mps, "lost-R" (every paced rate lost, the lowest being R)
# or "failed" (no unpaced result to start from).
lossless() {
  local size=$1 v=$2 rep=$3 base f mps
  base=$(val "tp-$size" "$v" "$rep" rate)
  if [ "$base" = NA ] || [ "$(val "tp-$size" "$v" "$rep" loss)" = NA ]; then
    put "lossless-$size" "$v" "$rep" rate NA; put "lossless-$size" "$v" "$rep" how failed
    log "lossless $size $v rep $rep: no unpaced result to start from"
    return 0
  fi
  if [ "$(val "tp-$size" "$v" "$rep" loss)" = 0 ]; then
    put "lossless-$size" "$v" "$rep" rate "$(val "tp-$size" "$v" "$rep" rxrate)"; put "lossless-$size" "$v" "$rep" how unpaced
    log "lossless $size $v rep $rep: the unpaced run lost nothing ($(val "tp-$size" "$v" "$rep" rxrate) msg/s received)"
    return 0
  fi
  for f in $LOSSLESS_FRACTIONS; do
    mps=$(awk -v b="$base" -v f="$f" 'BEGIN {printf "%d", b * f}')
    tp "$size" "$v" "$rep" "$mps" "paced-$size-$f"
    if [ "$(val "paced-$size-$f" "$v" "$rep" loss)" = 0 ]; then
      put "lossless-$size" "$v" "$rep" rate "$(val "paced-$size-$f" "$v" "$rep" rxrate)"; put "lossless-$size" "$v" "$rep" how "$mps"
      put "lossless-$size" "$v" "$rep" sent "$(val "paced-$size-$f" "$v" "$rep" rate)"
      log "lossless $size $v rep $rep: $(val "paced-$size-$f" "$v" "$rep" rxrate) msg/s received (paced at $mps = $f x $base)"
      return 0
    fi
  done
  put "lossless-$size" "$v" "$rep" rate NA; put "lossless-$size" "$v" "$rep" how "lost-$mps"
  log "lossless $size $v rep $rep: every paced rate lost datagrams (the lowest: $mps)"
}

# Ping-pong variants: kernel and accel-M; throughput variants add accel-tp-M.
VARIANTS=(kernel)
for m in $XDP_MODES; do VARIANTS+=("accel-$m"); done
TP_VARIANTS=("${VARIANTS[@]}")
for m in $XDP_MODES; do TP_VARIANTS+=("accel-tp-$m"); done
reversed() { local i; for ((i = $# ; i >= 1; i--)); do printf '%s\n' "${!i}"; done; }
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  ORDER=("${VARIANTS[@]}")
  TP_ORDER=("${TP_VARIANTS[@]}")
  if [ $((rep % 2)) = 0 ]; then
    mapfile -t ORDER < <(reversed "${VARIANTS[@]}")
    mapfile -t TP_ORDER < <(reversed "${TP_VARIANTS[@]}")
  fi
  log "repetition $rep/$REPS (order: ${ORDER[*]}; throughput: ${TP_ORDER[*]})"
  for t in busy blocking; do for v in "${ORDER[@]}"; do pp "$t" "$v" "$rep"; done; done
  for size in 64 1472; do for v in "${TP_ORDER[@]}"; do tp "$size" "$v" "$rep"; done; done
  for size in 64 1472; do for v in "${TP_ORDER[@]}"; do lossless "$size" "$v" "$rep"; done; done
done
LOAD_END=$(cut -d" " -f1-3 /proc/loadavg)

# ---- report --------------------------------------------------------------------------------
median() { # test variant metric -> median over reps (NA if none)
  awk -F'\t' -v t="$1" -v v="$2" -v m="$3" '$1 == t && $2 == v && $4 == m && $5 != "NA" && $5 != "" {print $5}' "$RES" \
    | sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
median_all() { # test variant metric -> median over reps, NA if any repetition has none
  awk -F'\t' -v t="$1" -v v="$2" -v m="$3" '$1 == t && $2 == v && $4 == m {print $5}' "$RES" \
    | sort -g | awk '$1 == "NA" || $1 == "" {bad = 1} {a[NR] = $1} END {if (bad || NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
ratio() { awk -v a="$1" -v k="$2" 'BEGIN {if (a == "NA" || k == "NA" || k == 0) print "NA"; else printf "%.2f\n", a / k}'; }

# ---- percentile plot of the last repetition's busy ping-pongs ------------------------------
. "$ROOT/scripts/bench/percentiles.sh"   # pcts, percentile_plot
PCT_NOTE="" SERIES=()
COLORS=("#d62728" "#1f77b4" "#2ca02c" "#9467bd" "#ff7f0e")
i=0
for v in "${VARIANTS[@]}"; do
  if [ -s "$WORK/pp-busy-$v.csv" ]; then
    pcts "$WORK/pp-busy-$v.csv" > "$WORK/pct-$v.dat"
    SERIES+=("$WORK/pct-$v.dat|$v|${COLORS[$i]}")
  fi
  i=$((i + 1))
done
if [ "${#SERIES[@]}" -gt 1 ]; then
  percentile_plot "$PCT" \
    "UDP ping-pong 64 B across a veth pair, busy mode: half-RTT by percentile (sockperf, rep $REPS of $REPS, $(date -u "+%Y-%m-%d %H:%M UTC"))" \
    "${SERIES[@]}" || PCT_NOTE="gnuplot failed"
else
  PCT_NOTE="no --full-log data from the last repetition"
fi
[ -n "$PCT_NOTE" ] && log "percentile plot: $PCT_NOTE"

ratio3() { awk -v a="$1" -v k="$2" 'BEGIN {if (a == "NA" || k == "NA" || k == 0) print "NA"; else printf "%.3f\n", a / k}'; }
judge() { # accel kernel le|ge factor -> yes|no|NA: accel/kernel <= (le) or >= (ge) factor
  awk -v a="$1" -v k="$2" -v op="$3" -v f="$4" 'BEGIN {if (a == "NA" || k == "NA" || k == 0) print "NA"
    else if (op == "le") print (a / k <= f) ? "yes" : "no"; else print (a / k >= f) ? "yes" : "no"}'
}
met() { case $1 in yes) echo "**met**" ;; no) echo "**not met**" ;; *) echo "**undetermined** (a median is NA)" ;; esac; }

SECTION=$WORK/section.md
{
  echo "<!-- xdp:begin -->"
  echo "## AF_XDP datapath (scripts/bench-xdp.sh)"
  echo
  echo "Run $STARTED, commit $COMMIT, $REPS repetitions of ${DURATION} s, kernel and accel alternating:"
  echo "per repetition each test runs every variant in turn (kernel, accel-M, and for throughput accel-tp-M),"
  echo "the order reversed every other repetition; a repetition's lossless search follows its unpaced runs."
  echo "sockperf across a veth pair between two network namespaces (one queue each way), server in A on"
  echo "core $SERVER_CPU, client in B on core $CLIENT_CPU;"
  echo "accel = \`ACCEL_XDP=1\` on both ends (veth: AF_XDP copy mode; the program in native or generic"
  echo "mode). Load average at start $LOAD_START, at end $LOAD_END. Medians over repetitions."
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), Linux $(uname -r);"
  echo "$(sockperf --version 2>&1 | head -n1 | sed 's/^sockperf, //;s/^/sockperf /'). Command: \`scripts/bench-xdp.sh\` with REPS=$REPS DURATION=$DURATION XDP_MODES=\"$XDP_MODES\" LOSSLESS_FRACTIONS=\"$LOSSLESS_FRACTIONS\"."
  echo
  echo '```'
  echo "# server in namespace A ($A_IP), client in B ($B_IP), one-queue veth pair"
  echo "[ENV] taskset -c $SERVER_CPU sockperf sr -i $A_IP -p PORT [--nonblocked]"
  echo "[ENV] taskset -c $CLIENT_CPU sockperf pp -i $A_IP -p PORT -m 64 -t $DURATION --mps 3000000 [--nonblocked]"
  echo "[ENV] taskset -c $CLIENT_CPU sockperf tp -i $A_IP -p PORT -m SIZE -t $DURATION (--pps max | --mps RATE) --nonblocked"
  echo "#   ENV, the same on both ends, for each variant (M = an XDP mode of XDP_MODES: ${XDP_MODES// /, }):"
  echo "#   kernel: (none)"
  echo "#   accel-M: $(env_text accel-M busy)(ping-pong busy, throughput; ping-pong blocking without ACCEL_PROFILE)"
  echo "#   accel-tp-M (throughput only): $(env_text accel-tp-M busy | sed 's/ $//')"
  echo '```'
  echo
  echo "### Ping-pong, 64 B, half round trip (usec)"
  echo
  echo "| test | variant | p50 | p99 | p99.9 | avg | p50 / kernel |"
  echo "|---|---|---|---|---|---|---|"
  for t in busy blocking; do
    k50=$(median "pp-$t" kernel p50)
    for v in "${VARIANTS[@]}"; do
      p50=$(median "pp-$t" "$v" p50)
      echo "| $t | $v | $p50 | $(median "pp-$t" "$v" p99) | $(median "pp-$t" "$v" p999) | $(median "pp-$t" "$v" avg) | $(ratio "$p50" "$k50") |"
    done
  done
  echo
  echo "### Throughput, --pps max, busy receiver"
  echo
  echo "| size | variant | sent msg/s | received msg/s | loss % | received / kernel |"
  echo "|---|---|---|---|---|---|"
  for size in 64 1472; do
    krx=$(median "tp-$size" kernel rxrate)
    for v in "${TP_VARIANTS[@]}"; do
      rx=$(median "tp-$size" "$v" rxrate)
      echo "| $size B | $v | $(median "tp-$size" "$v" rate) | $rx | $(median "tp-$size" "$v" lossp) | $(ratio "$rx" "$krx") |"
    done
  done
  echo
  echo "### Highest lossless rate"
  echo
  echo "Per repetition and variant: the unpaced run's received msg/s if it lost nothing (\"unpaced\");"
  echo "otherwise one paced run (\`--mps R\` instead of \`--pps max\`, $DURATION s) per rate, R = f × the rate the same"
  echo "variant sent unpaced in that repetition, f = ${LOSSLESS_FRACTIONS// /, } in turn, until one loses nothing"
  echo "(\"paced at R\"; \"sent only S\": that run's sender reached less than 90% of R). Median over repetitions,"
  echo "NA if any repetition found no rate without loss."
  echo
  echo "| size | variant | received msg/s, nothing lost, per repetition | from an unpaced run | median | median / kernel |"
  echo "|---|---|---|---|---|---|"
  for size in 64 1472; do
    kll=$(median_all "lossless-$size" kernel rate)
    for v in "${TP_VARIANTS[@]}"; do
      cells="" n_unpaced=0
      for r in $(seq "$REPS"); do
        how=$(val "lossless-$size" "$v" "$r" how)
        case $how in
          unpaced) cell="$(val "lossless-$size" "$v" "$r" rate) (unpaced)"; n_unpaced=$((n_unpaced + 1)) ;;
          lost-*) cell="NA (lost at every rate, down to ${how#lost-})" ;;
          failed|NA) cell="NA (no unpaced result)" ;;
          *) cell="$(val "lossless-$size" "$v" "$r" rate) (paced at $how"
             sent=$(val "lossless-$size" "$v" "$r" sent)
             # a sender that fell well short of its pace says little about that rate: flagged
             if awk -v s="$sent" -v m="$how" 'BEGIN {exit !(s != "NA" && s < 0.9 * m)}'; then cell+=", but sent only $sent msg/s"; fi
             cell+=")" ;;
        esac
        cells+="${cells:+; }$cell"
      done
      ll=$(median_all "lossless-$size" "$v" rate)
      echo "| $size B | $v | $cells | $n_unpaced of $REPS | $ll | $(ratio "$ll" "$kll") |"
    done
  done
  echo
  if [ -z "$PCT_NOTE" ]; then
    echo "![half-RTT by percentile, kernel vs accel, busy mode, across veth]($PCT_REL)"
    echo
    echo "Every sample of the last repetition's busy-mode ping-pongs (\`--full-log\`), by percentile."
  else
    echo "(No percentile plot: $PCT_NOTE.)"
  fi
  if [ -s "$FAIL" ]; then
    echo
    echo "### Runs that failed"
    echo
    cat "$FAIL"
  fi
  echo
  echo "### Targets"
  echo
  echo "Issue 4's targets, judged on this run's medians against the kernel's of the same run (undetermined:"
  echo "a median is NA, e.g. a repetition found no rate without loss down to the lowest fraction)."
  echo
  echo "| target | measured (medians) | result |"
  echo "|---|---|---|"
  k50=$(median pp-busy kernel p50)
  for m in $XDP_MODES; do
    a50=$(median pp-busy "accel-$m" p50)
    echo "| busy p50: accel-$m ≤ 0.65 × kernel | accel-$m $a50 µs vs kernel $k50 µs (ratio $(ratio3 "$a50" "$k50")) | $(met "$(judge "$a50" "$k50" le 0.65)") |"
  done
  for size in 64 1472; do
    kll=$(median_all "lossless-$size" kernel rate)
    for v in "${TP_VARIANTS[@]:1}"; do
      ll=$(median_all "lossless-$size" "$v" rate)
      echo "| $size B highest lossless rate: $v ≥ 2 × kernel | $v $ll vs kernel $kll msg/s received without loss (ratio $(ratio3 "$ll" "$kll")) | $(met "$(judge "$ll" "$kll" ge 2)") |"
    done
  done
  echo "<!-- xdp:end -->"
} > "$SECTION"

[ -f "$DOC" ] || printf '# Benchmarks\n\n' > "$DOC"
if grep -q '<!-- xdp:begin -->' "$DOC"; then
  awk -v f="$SECTION" '
    /<!-- xdp:begin -->/ {while ((getline l < f) > 0) print l; skip = 1; next}
    /<!-- xdp:end -->/ {skip = 0; next}
    !skip {print}' "$DOC" > "$WORK/doc.md"
  cp "$WORK/doc.md" "$DOC"
else
  { echo; cat "$SECTION"; } >> "$DOC"
fi
cat "$SECTION"
