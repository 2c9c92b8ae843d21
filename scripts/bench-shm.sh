#!/usr/bin/env bash
# Same-host shm datapath benchmark (a benchmark, not a test): accel with ACCEL_SHM=1 vs the
# kernel's UDP loopback, and the raw shared-memory floor, in one run, alternating.
#
#  1. sockperf ping-pong, UDP 64 B: busy mode (--nonblocked on both sides; accel with
#     ACCEL_PROFILE=latency) and blocking mode (accel with the default profile); p50/p99/p99.9
#     and avg of the half round trip, median over repetitions, accel/kernel ratio. Plus a
#     supplementary blocking run paced at 1000 msg/s, where receivers go idle between messages.
#     Histogram of the busy runs of the last repetition (sockperf --full-log) in
#     docs/img/shm-latency.png, and their percentiles (p1 .. p99.99, max) in
#     docs/img/shm-percentiles.png.
#  2. The floors: scripts/bench/shm_pingpong.c, two processes ping-ponging one sequence word each
#     way through a MAP_SHARED mapping (busy spin, no system calls) — the least any exchange
#     costs; and the same program's ring mode, 64 B messages through a plain head/tail SPSC ring
#     each way — the issue's "raw shared-memory ring ping-pong". And the ring protocol alone:
#     accel/examples/ring_pingpong.rs, the same through two of accel's shm rings (64 B datagrams,
#     no sockets, no interposition), so the gap between floor and sockperf splits into the ring's
#     share and the socket layer's.
#  3. sockperf throughput, UDP 64 B and 1472 B, --pps max: client msg/s sent, server's received
#     count (sockperf sr prints it when it gets SIGINT), loss = sent - received. Busy mode also
#     runs accel with ACCEL_PROFILE=throughput (mode accel-tp: deeper rings). Then, 64 B busy,
#     the highest rate without loss: the unpaced run's if it lost nothing, else the highest paced
#     rate (--mps) without loss, searched downward from the unpaced rate.
#  4. Memory: VmRSS of an idle sockperf server with and without the library, and of a python3
#     program holding N = 1, 10, 100 bound UDP sockets (default ring allocation and
#     ACCEL_RING_ALLOCATION_LOGIC_RX=10, ring per socket); /dev/shm/accel-$UID contents.
#
# Server on core 0, client on core 1 (taskset). Every process is bounded by `timeout`; the trap
# only kills the processes this script started.
#
# Results replace the section between <!-- shm:begin --> and <!-- shm:end --> of
# docs/benchmarks.md (other sections belong to other bench scripts).
#
# Environment: REPS (3), DURATION (3, seconds per sockperf run), FLOOR_N (1000000 round trips),
#              LOSSLESS_FRACTIONS ("1.0 0.9 0.8 0.7 0.6 0.45 0.3 0.2 0.1", of the unpaced rate),
#              TP_MODES ("busy blocking"), NO_BUILD=1 to skip cargo build, KEEP=1 to keep the
#              work directory (raw outputs), SERVER_CPU (0), CLIENT_CPU (1).
set -euo pipefail
# The exact command, as it could be typed again: the settings given in the environment, then
# the script (recorded in docs/benchmarks.md).
INVOCATION=""
for v in REPS DURATION FLOOR_N LOSSLESS_FRACTIONS TP_MODES NO_BUILD KEEP SERVER_CPU CLIENT_CPU; do
  [ -n "${!v+x}" ] && INVOCATION+="$v=$(printf '%q' "${!v}") "
done
INVOCATION+="bash scripts/bench-shm.sh"
cd "$(dirname "$0")/.."
ROOT=$(pwd)

REPS=${REPS:-3}
DURATION=${DURATION:-3}
FLOOR_N=${FLOOR_N:-1000000}
TP_MODES=${TP_MODES:-busy blocking}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
DOC=$ROOT/docs/benchmarks.md
IMG_REL=img/shm-latency.png
IMG=$ROOT/docs/$IMG_REL
PCT_REL=img/shm-percentiles.png
PCT=$ROOT/docs/$PCT_REL

for tool in cargo cc sockperf taskset timeout python3 gnuplot ss awk; do
  command -v "$tool" >/dev/null || { echo "bench-shm: $tool missing" >&2; exit 1; }
done

if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo build --release --workspace
  cargo build --release -p accel-engine --example ring_pingpong
fi
RING_PP=$ROOT/target/release/examples/ring_pingpong
[ -x "$RING_PP" ] || { echo "bench-shm: $RING_PP missing (cargo build --release -p accel-engine --example ring_pingpong)" >&2; exit 1; }
LIB=$ROOT/target/release/libaccel.so
[ -f "$LIB" ] || { echo "bench-shm: $LIB missing: cargo build --release --workspace" >&2; exit 1; }
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ', with uncommitted changes')"

# The library's own settings must not leak in from the caller's environment.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(\(ACCEL\|VMA\)_[A-Za-z0-9_]*\)=.*/\1/p')
unset LD_PRELOAD

WORK=$(mktemp -d /tmp/accel-bench-shm.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "bench-shm: raw outputs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RES=$WORK/results.tsv      # test <TAB> mode <TAB> rep <TAB> metric <TAB> value
: > "$RES"
FAIL=$WORK/failures.md     # anything that did not run cleanly, for the doc
: > "$FAIL"
log() { printf 'bench-shm: %s\n' "$*" >&2; }
put() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RES"; }
val() { awk -F'\t' -v t="$1" -v m="$2" -v r="$3" -v k="$4" '$1==t && $2==m && $3==r && $4==k {v=$5} END {print (v == "" ? "NA" : v)}' "$RES"; }
fail() { # title, file with output
  log "FAILED: $1"
  { printf -- '- %s\n\n```\n' "$1"; tail -n 15 "$2" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g'; printf '```\n\n'; } >> "$FAIL"
}

# ---- environments --------------------------------------------------------------------------
KERNEL_ENV=(env -u LD_PRELOAD)
ACCEL_BUSY_ENV=(env LD_PRELOAD="$LIB" ACCEL_SHM=1 ACCEL_PROFILE=latency)
ACCEL_DEFAULT_ENV=(env LD_PRELOAD="$LIB" ACCEL_SHM=1)
ACCEL_TP_ENV=(env LD_PRELOAD="$LIB" ACCEL_SHM=1 ACCEL_PROFILE=throughput)
env_for() { # mode(kernel|accel|accel-tp) profile(busy|blocking) -> ENVV
  if [ "$1" = kernel ]; then ENVV=("${KERNEL_ENV[@]}")
  elif [ "$1" = accel-tp ]; then ENVV=("${ACCEL_TP_ENV[@]}")
  elif [ "$2" = busy ]; then ENVV=("${ACCEL_BUSY_ENV[@]}")
  else ENVV=("${ACCEL_DEFAULT_ENV[@]}"); fi
}
env_text() { # for the doc
  if [ "$1" = kernel ]; then echo ""
  elif [ "$1" = accel-tp ]; then echo "LD_PRELOAD=target/release/libaccel.so ACCEL_SHM=1 ACCEL_PROFILE=throughput "
  elif [ "$2" = busy ]; then echo "LD_PRELOAD=target/release/libaccel.so ACCEL_SHM=1 ACCEL_PROFILE=latency "
  else echo "LD_PRELOAD=target/release/libaccel.so ACCEL_SHM=1 "; fi
}

# ---- ports and processes -------------------------------------------------------------------
PORT=$((20000 + $$ % 20000))
next_port() {
  PORT=$((PORT + 1))
  while ss -Hlun "( sport = :$PORT )" 2>/dev/null | grep -q .; do PORT=$((PORT + 1)); done
}
wait_port() { # port: wait until something listens on it (UDP), at most 5 s
  local i
  for i in $(seq 50); do
    ss -Hlun "( sport = :$1 )" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  log "port $1: nothing bound after 5 s"
  return 1
}
SRV_PID=""
start_server() { # out-file, cpu, env..., -- sockperf args...
  local out=$1 cpu=$2; shift 2
  local envv=()
  while [ "$1" != -- ]; do envv+=("$1"); shift; done
  shift
  timeout -k 5 $((DURATION + 60)) taskset -c "$cpu" "${envv[@]}" sockperf "$@" > "$out" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
}
child_of() { # the process `timeout` runs (taskset and env exec into it)
  local i c
  for i in $(seq 50); do
    c=$(ps -o pid= --ppid "$1" 2>/dev/null | head -n1 | tr -d ' ')
    [ -n "$c" ] && { echo "$c"; return 0; }
    sleep 0.05
  done
  return 1
}
stop_server() { # timeout-pid, out-file; SIGINT makes sockperf print its statistics and exit
  local pid=$1 out=$2 i
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
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
HZ=$(getconf CLK_TCK)
cpu_share() { # timeout-pid -> CPU time of the process it runs, in % of its lifetime so far (a
  # spinning server that got less than ~100% was preempted by something else: a noise indicator)
  local c
  c=$(child_of "$1") || { echo NA; return; }
  awk -v hz="$HZ" -v up="$(cut -d' ' -f1 /proc/uptime)" '{life = up - $22 / hz; printf "%.0f\n", (life > 0 ? 100 * ($14 + $15) / hz / life : 0)}' "/proc/$c/stat" 2>/dev/null || echo NA
}

# ---- 1. ping-pong --------------------------------------------------------------------------
# pp TEST(busy|blocking|paced) MODE(kernel|accel) REP
pp() {
  local test=$1 mode=$2 rep=$3 prof nb=() extra=() flog=()
  prof=busy; [ "$test" = busy ] && nb=(--nonblocked) || prof=blocking
  # Unpaced runs: --mps only sizes sockperf's sequence-number table, which at its default (about
  # 600K/s) is too small for the accelerated ping-pong (sockperf aborts with
  # "_seqN > m_maxSequenceNo"); both modes get the same option.
  extra=(--mps 3000000)
  [ "$test" = paced ] && extra=(--mps 1000)
  [ "$test" = busy ] && flog=(--full-log "$WORK/pp-busy-$mode-$rep.csv")
  env_for "$mode" "$prof"
  next_port
  local srv=$WORK/pp-$test-$mode-$rep.server out=$WORK/pp-$test-$mode-$rep.client rc=0
  start_server "$srv" "$SERVER_CPU" "${ENVV[@]}" -- sr -i 127.0.0.1 -p "$PORT" "${nb[@]}"
  wait_port "$PORT" || true
  timeout -k 5 $((DURATION + 30)) taskset -c "$CLIENT_CPU" "${ENVV[@]}" \
    sockperf pp -i 127.0.0.1 -p "$PORT" -m 64 -t "$DURATION" "${nb[@]}" "${extra[@]}" "${flog[@]}" \
    > "$out" 2>&1 || rc=$?
  put "pp-$test" "$mode" "$rep" srvcpu "$(cpu_share "$SRV_PID")"
  stop_server "$SRV_PID" "$srv"
  local p50 p99 p999 avg
  p50=$(strip "$out" | awk '/percentile 50.000 =/ {print $NF}' | tail -n1)
  p99=$(strip "$out" | awk '/percentile 99.000 =/ {print $NF}' | tail -n1)
  p999=$(strip "$out" | awk '/percentile 99.900 =/ {print $NF}' | tail -n1)
  avg=$(strip "$out" | awk '/Summary: Latency is/ {print $(NF-1)}' | tail -n1)
  if [ "$rc" != 0 ] || [ -z "$p50" ]; then
    fail "ping-pong $test $mode rep $rep: client exit status $rc: \`$(env_text "$mode" "$prof")sockperf pp -i 127.0.0.1 -p $PORT -m 64 -t $DURATION ${nb[*]} ${extra[*]}\`" "$out"
    p50=NA p99=NA p999=NA avg=NA
  fi
  put "pp-$test" "$mode" "$rep" p50 "$p50"; put "pp-$test" "$mode" "$rep" p99 "$p99"
  put "pp-$test" "$mode" "$rep" p999 "$p999"; put "pp-$test" "$mode" "$rep" avg "$avg"
  put "pp-$test" "$mode" "$rep" max "$(strip "$out" | awk '/<MAX> observation =/ {print $NF}' | tail -n1)"
  put "pp-$test" "$mode" "$rep" obs "$(strip "$out" | awk '/observations; each percentile/ {print $2}' | tail -n1)"
  log "pp $test $mode rep $rep: p50=$p50 p99=$p99 p99.9=$p999 avg=$avg"
}

# ---- 2. floor ------------------------------------------------------------------------------
cc -O2 -Wall -Wextra -o "$WORK/shm_pingpong" scripts/bench/shm_pingpong.c
# floor REP KIND: KIND shm = the one-word floor (shm_pingpong), rawring = a plain SPSC ring of 64 B
# messages (shm_pingpong ring), ring = accel's ring protocol alone
floor() {
  local rep=$1 kind=$2 out=$WORK/floor-$2-$1.out rc=0 prog mode=()
  case $kind in
    ring) prog=$RING_PP ;;
    rawring) prog=$WORK/shm_pingpong mode=(ring) ;;
    *) prog=$WORK/shm_pingpong ;;
  esac
  timeout -k 5 120 "$prog" "$FLOOR_N" "$CLIENT_CPU" "$SERVER_CPU" "${mode[@]}" > "$out" 2>&1 || rc=$?
  local k v
  if [ "$rc" != 0 ] || ! grep -q 'p50=' "$out"; then
    fail "floor $kind rep $rep: $(basename "$prog") exit status $rc" "$out"
    for k in p50 p99 p999 avg max; do put floor "$kind" "$rep" "$k" NA; done
    return
  fi
  for k in p50 p99 p99.9 avg max; do
    v=$(tr ' ' '\n' < "$out" | sed -n "s/^$k=//p")
    put floor "$kind" "$rep" "${k/./}" "$v"
  done
  log "floor $kind rep $rep: $(cat "$out")"
}

# ---- 3. throughput -------------------------------------------------------------------------
# tp SIZE PROFILE(busy|blocking) MODE REP
tp() {
  local size=$1 prof=$2 mode=$3 rep=$4 nb=() pace=(--pps max) key="tp-$size-$prof"
  [ "$prof" = busy ] && nb=(--nonblocked)
  if [ -n "${5:-}" ]; then pace=(--mps "$5"); key="tpl-$size-$prof-$5"; fi
  env_for "$mode" "$prof"
  next_port
  local srv=$WORK/tp-$size-$prof-$mode-$rep.server out=$WORK/tp-$size-$prof-$mode-$rep.client rc=0
  start_server "$srv" "$SERVER_CPU" "${ENVV[@]}" -- sr -i 127.0.0.1 -p "$PORT" "${nb[@]}"
  wait_port "$PORT" || true
  timeout -k 5 $((DURATION + 30)) taskset -c "$CLIENT_CPU" "${ENVV[@]}" \
    sockperf tp -i 127.0.0.1 -p "$PORT" -m "$size" -t "$DURATION" "${pace[@]}" "${nb[@]}" \
    > "$out" 2>&1 || rc=$?
  put "$key" "$mode" "$rep" srvcpu "$(cpu_share "$SRV_PID")"
  sleep 0.5   # let the server drain what is queued before it is told to stop
  stop_server "$SRV_PID" "$srv"
  local sent secs rate recvd
  sent=$(strip "$out" | awk '/Total of .* messages sent in/ {print $4}' | tail -n1)
  secs=$(strip "$out" | awk '/Total of .* messages sent in/ {print $(NF-1)}' | tail -n1)
  rate=$(strip "$out" | awk '/Summary: Message Rate is/ {print $(NF-1)}' | tail -n1)
  recvd=$(strip "$srv" | awk '/messages received and handled/ {print $3}' | tail -n1)
  if [ "$rc" != 0 ] || [ -z "$sent" ] || [ -z "$rate" ]; then
    fail "throughput $size B $prof $mode rep $rep: client exit status $rc: \`$(env_text "$mode" "$prof")sockperf tp -i 127.0.0.1 -p $PORT -m $size -t $DURATION ${pace[*]} ${nb[*]}\`" "$out"
    sent=NA secs=NA rate=NA
  fi
  if [ -z "$recvd" ]; then
    fail "throughput $size B $prof $mode rep $rep: no received count from the server" "$srv"
    recvd=NA
  fi
  local t=$key loss=NA lossp=NA rxrate=NA
  if [ "$sent" != NA ] && [ "$recvd" != NA ]; then
    loss=$((sent - recvd))
    lossp=$(awk -v l="$loss" -v s="$sent" 'BEGIN {printf "%.3f", s ? 100 * l / s : 0}')
    rxrate=$(awk -v r="$recvd" -v t="$secs" 'BEGIN {printf "%.0f", r / t}')
  fi
  put "$t" "$mode" "$rep" rate "$rate"; put "$t" "$mode" "$rep" sent "$sent"
  put "$t" "$mode" "$rep" recvd "$recvd"; put "$t" "$mode" "$rep" loss "$loss"
  put "$t" "$mode" "$rep" lossp "$lossp"; put "$t" "$mode" "$rep" rxrate "$rxrate"
  log "tp $size $prof $mode rep $rep ${pace[*]}: rate=$rate sent=$sent received=$recvd loss=$loss ($lossp%)"
}

# The highest paced rate without loss: 64 B busy, paced at falling fractions of the rate the same
# mode reached unpaced in this repetition, until a run loses nothing.
# tp_lossless MODE REP
LOSSLESS_FRACTIONS=${LOSSLESS_FRACTIONS:-1.0 0.9 0.8 0.7 0.6 0.45 0.3 0.2 0.1}
tp_lossless() {
  local mode=$1 rep=$2 max f mps
  max=$(val tp-64-busy "$mode" "$rep" rate)
  if [ "$max" = NA ]; then put tpl "$mode" "$rep" rate NA; return 0; fi
  # An unpaced run that lost nothing is a run without loss at the highest rate there is.
  if [ "$(val tp-64-busy "$mode" "$rep" loss)" = 0 ]; then
    put tpl "$mode" "$rep" rate "$(val tp-64-busy "$mode" "$rep" rxrate)"; put tpl "$mode" "$rep" paced unpaced
    log "tp lossless $mode rep $rep: the unpaced run lost nothing"
    return 0
  fi
  for f in $LOSSLESS_FRACTIONS; do
    mps=$(awk -v m="$max" -v f="$f" 'BEGIN {printf "%d", m * f}')
    tp 64 busy "$mode" "$rep" "$mps"
    local loss rate
    loss=$(awk -F'\t' -v k="tpl-64-busy-$mps" -v m="$mode" -v r="$rep" '$1==k && $2==m && $3==r && $4=="loss" {print $5}' "$RES" | tail -n1)
    rate=$(awk -F'\t' -v k="tpl-64-busy-$mps" -v m="$mode" -v r="$rep" '$1==k && $2==m && $3==r && $4=="rxrate" {print $5}' "$RES" | tail -n1)
    if [ "$loss" = 0 ]; then
      put tpl "$mode" "$rep" rate "$rate"; put tpl "$mode" "$rep" paced "$mps"
      log "tp lossless $mode rep $rep: $rate msg/s received without loss (paced at $mps = $f x $max)"
      return 0
    fi
  done
  put tpl "$mode" "$rep" rate NA
  log "tp lossless $mode rep $rep: every paced rate lost datagrams"
}

# ---- the run: alternating kernel/accel, order flipped every repetition ----------------------
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then ORDER=(kernel accel); else ORDER=(accel kernel); fi
  log "repetition $rep/$REPS (order: ${ORDER[*]})"
  for m in "${ORDER[@]}"; do pp busy "$m" "$rep"; done
  floor "$rep" shm
  floor "$rep" rawring
  floor "$rep" ring
  for m in "${ORDER[@]}"; do pp blocking "$m" "$rep"; done
  for m in "${ORDER[@]}"; do pp paced "$m" "$rep"; done
  # Throughput also runs accel with the throughput profile (busy mode only).
  if [ $((rep % 2)) = 1 ]; then TP_ORDER=(kernel accel accel-tp); else TP_ORDER=(accel-tp accel kernel); fi
  for size in 64 1472; do
    for prof in $TP_MODES; do
      for m in "${TP_ORDER[@]}"; do
        [ "$m" = accel-tp ] && [ "$prof" != busy ] && continue
        tp "$size" "$prof" "$m" "$rep"
      done
    done
  done
  for m in "${TP_ORDER[@]}"; do tp_lossless "$m" "$rep"; done
done

# ---- 4. memory -----------------------------------------------------------------------------
UIDN=$(id -u)
SHMDIR=/dev/shm/accel-$UIDN
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo NA; }
shm_files() { # pid, ports...: ring files of pid and endpoint files of ports -> "rings ring_bytes endpoints ep_bytes"
  local pid=$1; shift
  local rings=0 rbytes=0 eps=0 ebytes=0 f s p
  for f in "$SHMDIR"/ring-"$pid"-*; do
    [ -e "$f" ] || continue
    s=$(stat -c %s "$f"); rings=$((rings + 1)); rbytes=$((rbytes + s))
  done
  for p in "$@"; do
    for f in "$SHMDIR"/udp-*-"$p"; do
      [ -e "$f" ] || continue
      s=$(stat -c %s "$f"); eps=$((eps + 1)); ebytes=$((ebytes + s))
    done
  done
  echo "$rings $rbytes $eps $ebytes"
}
mem_put() { # test mode pid ports...
  local t=$1 m=$2 pid=$3; shift 3
  local k
  for k in VmRSS RssAnon RssFile RssShmem; do put "$t" "$m" 1 "$k" "$(status_kb "$pid" "$k")"; done
  read -r rings rb eps eb < <(shm_files "$pid" "$@")
  put "$t" "$m" 1 rings "$rings"; put "$t" "$m" 1 ring_bytes "$rb"
  put "$t" "$m" 1 endpoints "$eps"; put "$t" "$m" 1 ep_bytes "$eb"
  log "memory $t $m: VmRSS=$(status_kb "$pid" VmRSS) kB RssShmem=$(status_kb "$pid" RssShmem) kB rings=$rings ($rb B) endpoints=$eps ($eb B)"
}
SHM_LISTING=$WORK/shm-listing.txt
: > "$SHM_LISTING"

# 4a. idle sockperf server; then the same server after 1 s of ping-pong with a client of the
#     same mode (the server has then mapped the client's ring to reply through it).
for m in kernel accel; do
  env_for "$m" blocking
  next_port
  srv=$WORK/mem-sr-$m.server
  start_server "$srv" "$SERVER_CPU" "${ENVV[@]}" -- sr -i 127.0.0.1 -p "$PORT"
  wait_port "$PORT" || true
  sleep 1
  spid=$(child_of "$SRV_PID" || echo "")
  if [ -n "$spid" ]; then
    mem_put mem-sr-idle "$m" "$spid" "$PORT"
    if [ "$m" = accel ]; then
      { echo "\$ ls -l $SHMDIR   # idle accelerated sockperf server (pid $spid, port $PORT)"
        ls -l "$SHMDIR" 2>&1 | grep -E "ring-$spid-|-$PORT\$" || true; } >> "$SHM_LISTING"
    fi
    timeout -k 5 30 taskset -c "$CLIENT_CPU" "${ENVV[@]}" sockperf pp -i 127.0.0.1 -p "$PORT" -m 64 -t 1 --mps 3000000 \
      > "$WORK/mem-pp-$m.client" 2>&1 || fail "memory: ping-pong client against the $m server" "$WORK/mem-pp-$m.client"
    mem_put mem-sr-after "$m" "$spid" "$PORT"
  else
    fail "memory: sockperf server ($m) not found" "$srv"
  fi
  stop_server "$SRV_PID" "$srv"
done

# 4b. python3 holding N bound UDP sockets.
PY=$(python3 -c 'import sys; print(sys.executable)')   # the interpreter, not a pyenv shim
cat > "$WORK/socks.py" <<'EOF'
import os, socket, sys, time
n, ready, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
ports = " ".join(str(s.getsockname()[1]) for s in socks)
with open(ready + ".tmp", "w") as f:
    f.write("%d %s\n" % (os.getpid(), ports))
os.rename(ready + ".tmp", ready)
while not os.path.exists(stop):
    time.sleep(0.05)
for s in socks:
    s.close()
EOF
MEM_NS="1 10 100"
for n in $MEM_NS; do
  for cfg in kernel accel accel-ring-per-socket; do
    case $cfg in
      kernel) envv=("${KERNEL_ENV[@]}") ;;
      accel) envv=("${ACCEL_DEFAULT_ENV[@]}") ;;
      accel-ring-per-socket) envv=("${ACCEL_DEFAULT_ENV[@]}" ACCEL_RING_ALLOCATION_LOGIC_RX=10) ;;
    esac
    ready=$WORK/py-$cfg-$n.ready stopf=$WORK/py-$cfg-$n.stop
    timeout -k 5 60 "${envv[@]}" "$PY" "$WORK/socks.py" "$n" "$ready" "$stopf" > "$WORK/py-$cfg-$n.out" 2>&1 &
    ppid=$!; PIDS+=("$ppid")
    for i in $(seq 100); do [ -e "$ready" ] && break; sleep 0.1; done
    if [ -e "$ready" ]; then
      read -r pypid ports < "$ready"
      # shellcheck disable=SC2086
      mem_put "mem-py-$n" "$cfg" "$pypid" $ports
      if [ "$n" = 10 ] && [ "$cfg" != kernel ]; then
        { echo; echo "\$ ls -l $SHMDIR   # python3, 10 sockets, $cfg (pid $pypid)"
          # shellcheck disable=SC2086
          ls -l "$SHMDIR" 2>&1 | grep -E "ring-$pypid-|udp-.*-($(echo $ports | tr ' ' '|'))\$" || true; } >> "$SHM_LISTING"
      fi
    else
      fail "memory: python3 with $n sockets ($cfg) did not get ready" "$WORK/py-$cfg-$n.out"
    fi
    touch "$stopf"
    wait "$ppid" 2>/dev/null || true
  done
done

# ---- analysis ------------------------------------------------------------------------------
floor_table() { # KIND (shm|rawring|ring) -> per-repetition table of the floor runs, and their medians
  local kind=$1 rep
  echo "| rep | p50 | p99 | p99.9 | avg | max |"
  echo "|---|---:|---:|---:|---:|---:|"
  for rep in $(seq "$REPS"); do
    echo "| $rep | $(val floor "$kind" "$rep" p50) | $(val floor "$kind" "$rep" p99) | $(val floor "$kind" "$rep" p999) | $(val floor "$kind" "$rep" avg) | $(val floor "$kind" "$rep" max) |"
  done
  echo "| **median** | **$(med floor "$kind" p50)** | **$(med floor "$kind" p99)** | **$(med floor "$kind" p999)** | **$(med floor "$kind" avg)** | $(med floor "$kind" max) |"
}
med() { # test mode metric -> median over reps (NA if any is missing)
  awk -F'\t' -v t="$1" -v m="$2" -v k="$3" '$1==t && $2==m && $4==k {if ($5 == "NA" || $5 == "") bad=1; else a[n++]=$5+0}
    END {if (bad || n == 0) {print "NA"; exit}
         for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) {x=a[i]; a[i]=a[j]; a[j]=x}
         v = (n % 2) ? a[(n-1)/2] : (a[n/2-1] + a[n/2]) / 2
         if (v == int(v)) printf "%d\n", v; else printf "%.3f\n", v}' "$RES"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.3f\n", a / b}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "NA" || b == "NA") print "NA"; else print (a + 0 <= b + 0) ? "yes" : "no"}'; }
fmt_int() { awk -v a="$1" 'BEGIN {if (a == "NA") print a; else {s = sprintf("%d", a); o = ""; while (length(s) > 3) {o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3)}; print s o}}'; }

# ---- histogram -----------------------------------------------------------------------------
mkdir -p "$(dirname "$IMG")"
hist() { # csv -> "bin_center percent" lines, 20 log bins per decade
  awk -F', *' '/^[0-9]+, / && $4 + 0 > 0 {b = int(log($4) / log(10) * 20 + 1000) - 1000; c[b]++; n++}
    END {for (b in c) printf "%.6g %.6g\n", 10 ^ ((b + 0.5) / 20), 100 * c[b] / n}' "$1" | sort -g
}
KCSV=$WORK/pp-busy-kernel-$REPS.csv ACSV=$WORK/pp-busy-accel-$REPS.csv
PLOT_NOTE=""
if [ -s "$KCSV" ] && [ -s "$ACSV" ]; then
  hist "$KCSV" > "$WORK/hist-kernel.dat"
  hist "$ACSV" > "$WORK/hist-accel.dat"
  kp50=$(val pp-busy kernel "$REPS" p50) ap50=$(val pp-busy accel "$REPS" p50) fp50=$(med floor shm p50)
  gnuplot <<EOF || PLOT_NOTE="gnuplot failed"
set terminal pngcairo size 1000,600 font "DejaVu Sans,11" noenhanced
set encoding utf8
set output "$IMG"
set title "UDP ping-pong 64 B over loopback, busy mode: half-RTT histogram (sockperf, rep $REPS of $REPS, $(date -u "+%Y-%m-%d %H:%M UTC"))"
set xlabel "half round-trip latency (µs, log scale)"
set ylabel "share of samples per bin (%, log scale; 20 bins per decade)"
set logscale x 10
set logscale y 10
set format x "%g"
set format y "%g"
set xrange [0.1:*]
set yrange [0.0005:100]
set grid xtics ytics mxtics
set key top right box opaque
set style arrow 1 nohead dt 2 lw 1.5 lc rgb "#555555"
set arrow from $fp50, graph 0 to $fp50, graph 1 as 1
set label "raw shm floor p50 $fp50 µs" at $fp50, graph 0.96 left offset 0.5,0 tc rgb "#555555"
plot "$WORK/hist-kernel.dat" using 1:2 with linespoints pt 7 ps 0.6 lw 2 lc rgb "#d62728" title "kernel UDP loopback (p50 $kp50 µs)", \
     "$WORK/hist-accel.dat" using 1:2 with linespoints pt 5 ps 0.6 lw 2 lc rgb "#1f77b4" title "accel ACCEL_SHM=1 ACCEL_PROFILE=latency (p50 $ap50 µs)"
EOF
else
  PLOT_NOTE="no --full-log data from the last repetition"
fi
[ -n "$PLOT_NOTE" ] && log "histogram: $PLOT_NOTE"

# ---- percentile plot: the same samples, latency at each percentile ---------------------------
. "$ROOT/scripts/bench/percentiles.sh"   # pcts, percentile_plot
PCT_NOTE=""
if [ -s "$KCSV" ] && [ -s "$ACSV" ]; then
  pcts "$KCSV" > "$WORK/pct-kernel.dat"
  pcts "$ACSV" > "$WORK/pct-accel.dat"
  percentile_plot "$PCT" \
    "UDP ping-pong 64 B over loopback, busy mode: half-RTT by percentile (sockperf, rep $REPS of $REPS, $(date -u "+%Y-%m-%d %H:%M UTC"))" \
    "$WORK/pct-kernel.dat|kernel UDP loopback|#d62728" \
    "$WORK/pct-accel.dat|accel ACCEL_SHM=1 ACCEL_PROFILE=latency|#1f77b4" || PCT_NOTE="gnuplot failed"
else
  PCT_NOTE="no --full-log data from the last repetition"
fi
[ -n "$PCT_NOTE" ] && log "percentile plot: $PCT_NOTE"

# ---- the doc section -----------------------------------------------------------------------
SEC=$WORK/section.md
{
  echo "## Same-host shm datapath (ACCEL_SHM=1)"
  echo
  echo "Generated by \`scripts/bench-shm.sh\` (REPS=$REPS, DURATION=$DURATION s) starting $STARTED."
  echo "Command: \`$INVOCATION\` (effective: REPS=$REPS DURATION=$DURATION FLOOR_N=$FLOOR_N LOSSLESS_FRACTIONS=\"$LOSSLESS_FRACTIONS\" TP_MODES=\"$TP_MODES\" SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU)."
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), Linux $(uname -r); shared and noisy: other jobs ran at the"
  echo "same time (load average $LOAD_START at the start, $(cut -d" " -f1-3 /proc/loadavg) at the end), which shows in the tails (p99.9, max)."
  echo "Library: \`target/release/libaccel.so\` built from the working tree at commit \`$COMMIT\`."
  echo "$(sockperf --version 2>&1 | head -n1 | sed 's/^sockperf, //;s/^/sockperf /'); floor helper built with \`cc -O2\` ($(cc --version | head -n1))."
  echo
  echo "All runs are in one invocation, interleaved: per repetition each test runs kernel then accel"
  echo "(accel first in even repetitions). Server pinned to core $SERVER_CPU, client to core $CLIENT_CPU (\`taskset\`)."
  echo "Latencies are sockperf's half round trip in µs. Medians are over the $REPS repetitions."
  echo "*Server CPU %* = the server's CPU time over its lifetime, read just before it is stopped: a busy-mode server"
  echo "spins, so well under 100% there means it was preempted (by other jobs on the machine) during that run."
  echo
  echo "### Targets"
  echo
  kb=$(med pp-busy kernel p50) ab=$(med pp-busy accel p50) fl=$(med floor shm p50) frl=$(med floor rawring p50)
  kbl=$(med pp-blocking kernel p50) abl=$(med pp-blocking accel p50)
  krate=$(med tp-64-busy kernel rate) klr=$(med tpl kernel rate)
  t4=$(awk -v k="$klr" 'BEGIN {if (k == "NA") print "NA"; else printf "%d", 15 * k}')
  t1a=$(awk -v k="$kb" 'BEGIN {if (k == "NA") print "NA"; else printf "%.3f", 0.2 * k}')
  t1b=$(awk -v f="$fl" 'BEGIN {if (f == "NA") print "NA"; else printf "%.3f", 1.5 * f}')
  t1c=$(awk -v f="$frl" 'BEGIN {if (f == "NA") print "NA"; else printf "%.3f", 1.5 * f}')
  t3=$(awk -v k="$krate" 'BEGIN {if (k == "NA") print "NA"; else printf "%d", 15 * k}')
  met() { case $1 in yes) echo "**met**" ;; no) echo "**not met**" ;; *) echo "**pending** (no data)" ;; esac; }
  both() { if [ "$1" = yes ] && [ "$2" = yes ]; then echo yes; elif [ "$1" = NA ] || [ "$2" = NA ]; then echo NA; else echo no; fi; }
  echo "| target | measured (medians) | result |"
  echo "|---|---|---|"
  echo "| busy p50: accel ≤ 0.2 × kernel | accel $ab µs vs 0.2 × $kb = $t1a µs (ratio $(ratio "$ab" "$kb")) | $(met "$(le "$ab" "$t1a")") |"
  echo "| busy p50: accel ≤ 1.5 × the raw shared-memory ring ping-pong (64 B messages, plain SPSC ring) | accel $ab µs vs 1.5 × $frl = $t1c µs (ratio $(ratio "$ab" "$frl")) | $(met "$(le "$ab" "$t1c")") |"
  echo "| (stricter, beyond the issue) busy p50: accel ≤ 1.5 × the one-word floor (one cache line each way, nothing carried) | accel $ab µs vs 1.5 × $fl = $t1b µs (ratio $(ratio "$ab" "$fl")) | $(met "$(le "$ab" "$t1b")") |"
  echo "| blocking p50: accel ≤ kernel | accel $abl µs vs kernel $kbl µs (ratio $(ratio "$abl" "$kbl")) | $(met "$(le "$abl" "$kbl")") |"
  # The throughput targets, for accel with the throughput profile (the one made for it) and, for
  # reference, with the latency profile the other rows use.
  for m in accel-tp accel; do
    label="" arate="" aloss="" alr="" zero=""
    if [ "$m" = accel-tp ]; then label="ACCEL_PROFILE=throughput"; else label="latency profile, for reference"; fi
    arate=$(med tp-64-busy "$m" rate) alr=$(med tpl "$m" rate)
    aloss=$(awk -F'\t' -v m="$m" '$1=="tp-64-busy" && $2==m && $4=="loss" {if ($5=="NA") bad=1; s+=$5} END {print bad ? "NA" : s}' "$RES")
    zero=$( [ "$aloss" = NA ] && echo NA || { [ "$aloss" = 0 ] && echo yes || echo no; } )
    echo "| throughput 64 B (busy; $label): accel ≥ 15 × kernel msg/s | accel $(fmt_int "$arate") vs 15 × $(fmt_int "$krate") = $(fmt_int "$t3") msg/s (ratio $(ratio "$arate" "$krate")) | $(met "$(le "$t3" "$arate")") |"
    echo "| throughput 64 B (busy; $label): zero loss at that rate | accel lost $(fmt_int "$aloss") datagrams in total over $REPS runs | $(met "$zero") |"
    echo "| throughput 64 B (busy; $label), both at their highest rate without loss: accel ≥ 15 × kernel | accel $(fmt_int "$alr") vs 15 × $(fmt_int "$klr") = $(fmt_int "$t4") msg/s received without loss (ratio $(ratio "$alr" "$klr")) | $(met "$(le "$t4" "$alr")") |"
  done
  echo
  disturbed=$(awk -F'\t' '$4 == "srvcpu" && $1 ~ /busy/ && $5 != "NA" && $5 + 0 < 90 {printf "%s%s %s rep %s (%s%%)", sep, $1, $2, $3, $5; sep = ", "}' "$RES")
  if [ -n "$disturbed" ]; then
    echo "Busy-mode runs whose spinning server got less than 90% of its CPU (preempted by other jobs; their numbers are"
    echo "pessimistic): $disturbed. They are kept in the medians."
  else
    echo "Every busy-mode server got at least 90% of its CPU."
  fi
  echo
  if [ -s "$FAIL" ]; then
    echo "### Runs that failed (pending)"
    echo
    cat "$FAIL"
  fi
  echo "### Ping-pong latency, UDP 64 B"
  echo
  echo '```'
  echo "# busy (both sides spin on a non-blocking socket)"
  echo "[ENV] taskset -c $SERVER_CPU sockperf sr -i 127.0.0.1 -p PORT --nonblocked"
  echo "[ENV] taskset -c $CLIENT_CPU sockperf pp -i 127.0.0.1 -p PORT -m 64 -t $DURATION --nonblocked --mps 3000000 --full-log FILE"
  echo "#   ENV = (none) for kernel; $(env_text accel busy)for accel"
  echo "# blocking (blocking recvfrom)"
  echo "[ENV] taskset -c $SERVER_CPU sockperf sr -i 127.0.0.1 -p PORT"
  echo "[ENV] taskset -c $CLIENT_CPU sockperf pp -i 127.0.0.1 -p PORT -m 64 -t $DURATION --mps 3000000"
  echo "#   ENV = (none) for kernel; $(env_text accel blocking)(default profile) for accel"
  echo "# paced blocking (supplementary): as blocking, client adds --mps 1000"
  echo "# floor"
  echo "cc -O2 -o shm_pingpong scripts/bench/shm_pingpong.c && ./shm_pingpong $FLOOR_N $CLIENT_CPU $SERVER_CPU"
  echo "# raw ring floor"
  echo "./shm_pingpong $FLOOR_N $CLIENT_CPU $SERVER_CPU ring"
  echo "# ring protocol alone"
  echo "target/release/examples/ring_pingpong $FLOOR_N $CLIENT_CPU $SERVER_CPU"
  echo '```'
  echo
  for t in busy blocking paced; do
    case $t in
      busy) echo "**Busy mode** (accel: \`ACCEL_PROFILE=latency\`)" ;;
      blocking) echo "**Blocking mode** (accel: default profile, spins 100000 polls then sleeps)" ;;
      paced) echo "**Blocking mode paced at 1000 msg/s** (supplementary, no target: the receivers go idle between messages)" ;;
    esac
    echo
    echo "| rep | kernel p50 | kernel p99 | kernel p99.9 | kernel avg | kernel max | accel p50 | accel p99 | accel p99.9 | accel avg | accel max | server CPU % kernel / accel |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for rep in $(seq "$REPS"); do
      echo "| $rep | $(val "pp-$t" kernel "$rep" p50) | $(val "pp-$t" kernel "$rep" p99) | $(val "pp-$t" kernel "$rep" p999) | $(val "pp-$t" kernel "$rep" avg) | $(val "pp-$t" kernel "$rep" max) | $(val "pp-$t" accel "$rep" p50) | $(val "pp-$t" accel "$rep" p99) | $(val "pp-$t" accel "$rep" p999) | $(val "pp-$t" accel "$rep" avg) | $(val "pp-$t" accel "$rep" max) | $(val "pp-$t" kernel "$rep" srvcpu) / $(val "pp-$t" accel "$rep" srvcpu) |"
    done
    echo "| **median** | **$(med "pp-$t" kernel p50)** | **$(med "pp-$t" kernel p99)** | **$(med "pp-$t" kernel p999)** | **$(med "pp-$t" kernel avg)** | $(med "pp-$t" kernel max) | **$(med "pp-$t" accel p50)** | **$(med "pp-$t" accel p99)** | **$(med "pp-$t" accel p999)** | **$(med "pp-$t" accel avg)** | $(med "pp-$t" accel max) | |"
    echo
    echo "accel/kernel (medians): p50 **$(ratio "$(med "pp-$t" accel p50)" "$(med "pp-$t" kernel p50)")**, p99 **$(ratio "$(med "pp-$t" accel p99)" "$(med "pp-$t" kernel p99)")**, p99.9 **$(ratio "$(med "pp-$t" accel p999)" "$(med "pp-$t" kernel p999)")**, avg **$(ratio "$(med "pp-$t" accel avg)" "$(med "pp-$t" kernel avg)")**."
    echo
  done
  echo "**Floor**: raw shared-memory ping-pong, $FLOOR_N round trips per repetition (\`scripts/bench/shm_pingpong.c\`: two"
  echo "processes, one sequence word each way on its own 128-byte block of a MAP_SHARED anonymous mapping, busy spin,"
  echo "clock_gettime(CLOCK_MONOTONIC) around each round trip, half of it reported)."
  echo
  floor_table shm
  echo
  echo "**Raw ring floor**: the same program's ring mode (\`shm_pingpong ... ring\`): 64 B messages through a plain"
  echo "single-producer single-consumer ring each way (256 slots of 128 B; the producer copies the message in and"
  echo "publishes it by storing tail + 1, the consumer polls tail, copies it out and stores head + 1; the server copies"
  echo "each message back). The issue's \"raw shared-memory ring ping-pong\": what carrying 64 B through shared memory"
  echo "costs with the usual head/tail protocol, without a multi-producer lock, addresses, crash safety or sockets."
  echo
  floor_table rawring
  echo
  echo "**Ring protocol alone**: the same ping-pong through two of accel's shm rings, 64 B datagrams, $FLOOR_N round"
  echo "trips (\`accel/examples/ring_pingpong.rs\`: push, then peek/consume on the other side; no sockets, no"
  echo "interposition). What sockperf under accel adds on top of it is the socket layer's cost."
  echo
  floor_table ring
  echo
  echo "accel busy / one-word floor (medians): p50 **$(ratio "$ab" "$fl")**, p99 **$(ratio "$(med pp-busy accel p99)" "$(med floor shm p99)")**, p99.9 **$(ratio "$(med pp-busy accel p999)" "$(med floor shm p999)")**."
  echo "accel busy / raw ring floor (medians): p50 **$(ratio "$ab" "$frl")**, p99 **$(ratio "$(med pp-busy accel p99)" "$(med floor rawring p99)")**, p99.9 **$(ratio "$(med pp-busy accel p999)" "$(med floor rawring p999)")**."
  echo
  echo "![half-RTT histogram, kernel vs accel, busy mode]($IMG_REL)"
  echo
  echo "Histogram of every sample of the busy-mode runs of the last repetition (\`--full-log\`; 20 logarithmic"
  echo "bins per decade; the dashed line is the floor's median).${PLOT_NOTE:+ Not regenerated: $PLOT_NOTE.}"
  echo
  echo "![half-RTT by percentile, kernel vs accel, busy mode]($PCT_REL)"
  echo
  echo "The same samples by percentile (p1 to p99.99, then the maximum; the x axis is in \"nines\","
  echo "-log10(1 - p)).${PCT_NOTE:+ Not regenerated: $PCT_NOTE.}"
  echo
  echo "### Throughput, UDP, --pps max"
  echo
  echo '```'
  echo "[ENV] taskset -c $SERVER_CPU sockperf sr -i 127.0.0.1 -p PORT [--nonblocked]     # stopped with SIGINT 0.5 s after the client ends"
  echo "[ENV] taskset -c $CLIENT_CPU sockperf tp -i 127.0.0.1 -p PORT -m SIZE -t $DURATION --pps max [--nonblocked]"
  echo "#   busy: --nonblocked on both, accel ENV = $(env_text accel busy)(accel-tp: $(env_text accel-tp busy | sed 's/ $//'))"
  echo "#   blocking: no --nonblocked, accel ENV = $(env_text accel blocking)"
  echo '```'
  echo
  echo "*msg/s sent* = the client's \"Message Rate\"; *sent* = its \"Total of N messages sent in T sec\"; *received* = the"
  echo "server's \"Total N messages received and handled\", printed when it gets SIGINT (checked: at a paced 10000 msg/s"
  echo "the two counts are equal, so warm-up messages are counted the same way on both sides); received/s = received / T;"
  echo "loss = sent − received (datagrams over the whole run, and % of sent)."
  echo "Busy mode is the headline (and the one the target is judged on): in trial runs it sent faster than blocking mode"
  echo "for both kernel and accel, and the kernel receiver lost far less (a blocking receiver sleeps and wakes per batch"
  echo "and falls behind); it is also the mode the latency comparison uses."
  echo
  for size in 64 1472; do
    for prof in $TP_MODES; do
      t="tp-$size-$prof" modes=(kernel accel) head="| rep" rule="|---" row=""
      [ "$prof" = busy ] && modes+=(accel-tp)
      echo "**$size B, $prof**"
      echo
      for m in "${modes[@]}"; do head+=" | $m msg/s sent | $m received/s | $m loss (datagrams, %)"; rule+="|---:|---:|---:"; done
      echo "$head | server CPU % $(IFS=/; echo "${modes[*]}") |"
      echo "$rule|---:|"
      for rep in $(seq "$REPS"); do
        row="| $rep"
        for m in "${modes[@]}"; do
          row+=" | $(fmt_int "$(val "$t" "$m" "$rep" rate)") | $(fmt_int "$(val "$t" "$m" "$rep" rxrate)") | $(fmt_int "$(val "$t" "$m" "$rep" loss)") ($(val "$t" "$m" "$rep" lossp)%)"
        done
        echo "$row | $(for m in "${modes[@]}"; do printf '%s%s' "${sep:-}" "$(val "$t" "$m" "$rep" srvcpu)"; sep=" / "; done; unset sep) |"
      done
      row="| **median**"
      for m in "${modes[@]}"; do
        row+=" | **$(fmt_int "$(med "$t" "$m" rate)")** | $(fmt_int "$(med "$t" "$m" rxrate)") | $(fmt_int "$(med "$t" "$m" loss)") ($(med "$t" "$m" lossp)%)"
      done
      echo "$row | |"
      echo
      for m in "${modes[@]:1}"; do
        echo "$m/kernel (medians): msg/s sent **$(ratio "$(med "$t" "$m" rate)" "$(med "$t" kernel rate)")**, received per second **$(ratio "$(med "$t" "$m" rxrate)" "$(med "$t" kernel rxrate)")** (kernel $(fmt_int "$(med "$t" kernel rxrate)"), $m $(fmt_int "$(med "$t" "$m" rxrate)") received/s)."
        echo
      done
    done
  done
  paced_at() { v=$(val tpl "$1" "$2" paced); if [ "$v" = unpaced ]; then echo unpaced; else echo "paced at $(fmt_int "$v")"; fi; }
  echo "**64 B, busy, highest rate without loss**: per repetition and mode, the unpaced run's received/s if it lost"
  echo "nothing; otherwise sockperf tp paced (\`--mps R\` instead of \`--pps max\`) at R = f × the rate the same mode"
  echo "reached unpaced in that repetition, for f = $LOSSLESS_FRACTIONS in turn, until a run loses nothing; reported:"
  echo "that run's received/s (NA: every paced rate lost datagrams)."
  echo
  echo "| rep | kernel received/s without loss | accel (latency profile) | accel-tp (throughput profile) |"
  echo "|---|---:|---:|---:|"
  for rep in $(seq "$REPS"); do
    echo "| $rep | $(fmt_int "$(val tpl kernel "$rep" rate)") ($(paced_at kernel "$rep")) | $(fmt_int "$(val tpl accel "$rep" rate)") ($(paced_at accel "$rep")) | $(fmt_int "$(val tpl accel-tp "$rep" rate)") ($(paced_at accel-tp "$rep")) |"
  done
  echo "| **median** | **$(fmt_int "$(med tpl kernel rate)")** | **$(fmt_int "$(med tpl accel rate)")** | **$(fmt_int "$(med tpl accel-tp rate)")** |"
  echo
  echo "accel/kernel (medians): latency profile **$(ratio "$(med tpl accel rate)" "$(med tpl kernel rate)")**, throughput profile **$(ratio "$(med tpl accel-tp rate)" "$(med tpl kernel rate)")**."
  echo
  echo "### Memory"
  echo
  echo "Measured once (not repeated: page counts do not vary run to run), after the run above. VmRSS, RssShmem (the"
  echo "part of it that is shared memory) and the files in \`$SHMDIR\` belonging to the process, read from"
  echo "\`/proc/PID/status\` and \`stat\`; kB = KiB. The python3 helper (inline in the script) binds N UDP sockets to"
  echo "127.0.0.1:0 and waits; accel runs use \`LD_PRELOAD=target/release/libaccel.so ACCEL_SHM=1\` (default profile)."
  echo
  echo "| process | VmRSS kB | RssAnon kB | RssFile kB | RssShmem kB | rings (bytes) | endpoint files (bytes) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  memrow() { echo "| $3 | $(val "$1" "$2" 1 VmRSS) | $(val "$1" "$2" 1 RssAnon) | $(val "$1" "$2" 1 RssFile) | $(val "$1" "$2" 1 RssShmem) | $(val "$1" "$2" 1 rings) ($(fmt_int "$(val "$1" "$2" 1 ring_bytes)")) | $(val "$1" "$2" 1 endpoints) ($(fmt_int "$(val "$1" "$2" 1 ep_bytes)")) |"; }
  memrow mem-sr-idle kernel "sockperf sr, idle, kernel"
  memrow mem-sr-idle accel "sockperf sr, idle, accel (ACCEL_SHM=1)"
  memrow mem-sr-after kernel "sockperf sr after 1 s of ping-pong, kernel"
  memrow mem-sr-after accel "sockperf sr after 1 s of ping-pong, accel"
  for n in $MEM_NS; do
    memrow "mem-py-$n" kernel "python3, N=$n UDP sockets, kernel"
    memrow "mem-py-$n" accel "python3, N=$n, accel (default ring allocation)"
    memrow "mem-py-$n" accel-ring-per-socket "python3, N=$n, accel, ACCEL_RING_ALLOCATION_LOGIC_RX=10"
  done
  echo
  # The model: accel adds base + per_ring * rings + per_socket * sockets to VmRSS.
  add() { awk -v a="$(val "mem-py-$1" "$2" 1 VmRSS)" -v b="$(val "mem-py-$1" kernel 1 VmRSS)" 'BEGIN {print (a == "NA" || b == "NA") ? "NA" : a - b}'; }
  d1=$(add 1 accel) d100=$(add 100 accel) p1=$(add 1 accel-ring-per-socket) p100=$(add 100 accel-ring-per-socket)
  rb=$(val mem-py-1 accel 1 ring_bytes)
  per_sock=$(awk -v a="$d1" -v b="$d100" 'BEGIN {print (a == "NA" || b == "NA") ? "NA" : sprintf("%.1f", (b - a) / 99)}')
  # Ring per socket: the rings actually made (ACCEL_RX_BUFS bounds them), not N.
  r1=$(val mem-py-1 accel-ring-per-socket 1 rings) r100=$(val mem-py-100 accel-ring-per-socket 1 rings)
  e100=$(val mem-py-100 accel-ring-per-socket 1 endpoints)
  per_ring=$(awk -v a="$p1" -v b="$p100" -v s="$per_sock" -v r1="$r1" -v r2="$r100" 'BEGIN {print (a == "NA" || b == "NA" || s == "NA" || r1 == "NA" || r2 == "NA" || r2 <= r1) ? "NA" : sprintf("%.1f", (b - a - 99 * s) / (r2 - r1))}')
  base=$(awk -v a="$d1" -v r="$per_ring" -v s="$per_sock" 'BEGIN {print (a == "NA" || r == "NA") ? "NA" : sprintf("%.0f", a - r - s)}')
  echo "Added VmRSS (accel − kernel, same N): default allocation N=1 **$d1 kB**, N=100 **$d100 kB**; ring per socket N=1"
  echo "**$p1 kB**, N=100 **$p100 kB**. Fitting *added = base + per_ring × rings + per_socket × sockets* (rings = 1 with"
  echo "the default allocation, all sockets being on \`lo\`; with ring per socket, the rings actually made: $r1 for N=1,"
  echo "$r100 for N=100 — the default ACCEL_RX_BUFS=4096 buffers fill $r100 rings of 1024 slots, and sockets beyond them"
  echo "stay on the kernel path, one warning, $e100 endpoints published; raise ACCEL_RX_BUFS for more):"
  echo
  echo "- per socket ≈ **$per_sock kB** (default allocation, (N=100 − N=1) / 99; the endpoint file, 4 KiB in tmpfs, is not mapped by its owner and so not in its RSS),"
  echo "- per ring ≈ **$per_ring kB** resident in the owner before any datagram (ring per socket: (added N=100 − added N=1 − 99 × per socket) / (rings N=100 − rings N=1)); a ring's pages are all resident in tmpfs (RssShmem counts what this process touched),"
  echo "- base ≈ **$base kB** (N=1 default − one ring − one socket: the library's own pages and heap)."
  echo
  echo "Ring size = ACCEL_RX_WRE slots × slot size + 4 KiB header = 1024 × 2048 + 4096 = 2,101,248 B = 2052 KiB by"
  echo "default (slot size = next power of two ≥ MTU − 28 + 32 = 2048 for MTU 1500); measured ring file size: $(fmt_int "$rb") B."
  echo "Rings up to 16 MiB are mapped MAP_SHARED with MAP_POPULATE, so the whole ring is resident (RssShmem) from the"
  echo "start, and the tmpfs pages exist once per ring however many processes map it. A sender maps each receiver's"
  echo "ring it sends to, so those pages also show in the sender's RSS (compare the server before and after ping-pong)."
  echo "Each bound socket also leaves a 4 KiB endpoint file in \`$SHMDIR\`."
  echo
  echo '```'
  cat "$SHM_LISTING"
  echo '```'
  echo
} > "$SEC"

# ---- splice into docs/benchmarks.md, touching nothing outside the markers --------------------
BEGIN_M='<!-- shm:begin -->'
END_M='<!-- shm:end -->'
if [ ! -f "$DOC" ]; then
  printf '# Benchmarks\n\n%s\n%s\n' "$BEGIN_M" "$END_M" > "$DOC"
elif ! grep -qF "$BEGIN_M" "$DOC" || ! grep -qF "$END_M" "$DOC"; then
  printf '\n%s\n%s\n' "$BEGIN_M" "$END_M" >> "$DOC"
fi
awk -v sec="$SEC" -v b="$BEGIN_M" -v e="$END_M" '
  $0 == b {print; while ((getline l < sec) > 0) print l; skip = 1; next}
  $0 == e {skip = 0}
  !skip {print}' "$DOC" > "$WORK/doc.new"
cat "$WORK/doc.new" > "$DOC"
log "wrote the shm section of $DOC, $IMG and $PCT"
if [ -s "$FAIL" ]; then log "some runs failed: see the section"; fi
