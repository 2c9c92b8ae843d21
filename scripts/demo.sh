#!/usr/bin/env bash
# Demo: sockperf UDP ping-pong over loopback, plain kernel vs both ends under `accel run` with the
# same-host bypass on (ACCEL_SHM=1), side by side; the kernel's own UDP receive counter shows
# which run went through the kernel; `accel stat` taken while the accelerated pair runs shows their
# sockets and live counters. Then `accel run --check` and what the library logged (decisions, the
# shm rings it used).
#
# Usage: scripts/demo.sh [--no-build] [--seconds S]      (bounded: well under 30 s once built)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SECS=3
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --seconds) SECS=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--seconds S]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$BUILD" = 1 ]; then
  bash scripts/setup.sh >/dev/null
  cargo build --release --workspace --quiet
fi
ACCEL="$ROOT/target/release/accel"
[ -x "$ACCEL" ] || { echo "demo: $ACCEL missing: cargo build --release --workspace" >&2; exit 1; }
command -v sockperf >/dev/null || { echo "demo: sockperf missing: run scripts/setup.sh" >&2; exit 1; }

while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(\(ACCEL\|VMA\)_[A-Za-z0-9_]*\)=.*/\1/p')
unset LD_PRELOAD

WORK=$(mktemp -d /tmp/accel-demo.XXXXXX)
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_bound() { # port
  for _ in $(seq 1 250); do
    ss -lunH "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.02
  done
  echo "demo: sockperf server did not bind port $1" >&2
  return 1
}

# run_pp MODE: sockperf server + ping-pong client, both plain or both under `accel run`.
run_pp() {
  local mode=$1 port pre=()
  port=$(free_port)
  if [ "$mode" = accel ]; then
    pre=("$ACCEL" run -e ACCEL_SHM=1 -e ACCEL_LOG_LEVEL=debug -e "ACCEL_LOG_FILE=$WORK/accel.%d.log" --)
  fi
  local before
  before=$(udp_in)
  "${pre[@]}" sockperf sr -i 127.0.0.1 -p "$port" >"$WORK/server-$mode.log" 2>&1 &
  SERVER_PID=$!
  wait_bound "$port"
  # --mps sizes sockperf's sequence table (its default, about 600K/s, is too small for accel).
  timeout $((SECS + 20)) "${pre[@]}" sockperf pp -i 127.0.0.1 -p "$port" -t "$SECS" --mps 3000000 \
    >"$WORK/client-$mode.log" 2>&1 &
  local client=$!
  if [ "$mode" = accel ]; then
    # What the library shows about the two running programs while they run (sockperf's client
    # spends its first ~2 s on warm-up).
    sleep "$SECS"
    "$ACCEL" stat >"$WORK/stat.txt" 2>&1 || true
  fi
  wait "$client" || true
  echo $(( $(udp_in) - before )) >"$WORK/udp-in-$mode"
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# The kernel's count of UDP datagrams received (all processes on this host).
udp_in() {
  awk '/^Udp:/ { getline; print $2; exit }' /proc/net/snmp
}

# metric FILE WHAT -> number (avg | p50 | p99 | msgs)
metric() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | awk -v what="$2" '
    what == "avg"  && /avg-latency=/ { sub(/.*avg-latency=/, ""); sub(/ .*/, ""); print; exit }
    what == "p50"  && /percentile 50.000 =/ { print $NF; exit }
    what == "p99"  && /percentile 99.000 =/ { print $NF; exit }
    what == "msgs" && /\[Valid Duration\]/ { sub(/.*ReceivedMessages=/, ""); print $1; exit }'
}

echo "accel demo: sockperf UDP ping-pong over loopback, ${SECS}s each"
echo "kernel: plain sockperf; accel: both ends under 'accel run -e ACCEL_SHM=1' (same-host bypass)"
echo
run_pp kernel
run_pp accel

printf '%-24s %14s %14s\n' "" "kernel" "accel (shm)"
for m in avg p50 p99; do
  case $m in avg) label="avg latency (usec)" ;; p50) label="p50 latency (usec)" ;; p99) label="p99 latency (usec)" ;; esac
  printf '%-24s %14s %14s\n' "$label" "$(metric "$WORK/client-kernel.log" $m)" "$(metric "$WORK/client-accel.log" $m)"
done
printf '%-24s %14s %14s\n' "round trips measured" "$(metric "$WORK/client-kernel.log" msgs)" "$(metric "$WORK/client-accel.log" msgs)"
printf '%-24s %14s %14s\n' "kernel UDP InDatagrams" "$(cat "$WORK/udp-in-kernel")" "$(cat "$WORK/udp-in-accel")"
echo "(InDatagrams: /proc/net/snmp, whole host; the accel run's few are wake-up doorbells)"

echo
echo "---- accel stat during the accel run (live counters of both programs) ----"
cat "$WORK/stat.txt"

echo
echo "---- accel run --check ----"
"$ACCEL" run --check -e ACCEL_SHM=1 || true

echo
echo "---- what the library logged in the accel run (decisions) ----"
if ls "$WORK"/accel.*.log >/dev/null 2>&1; then
  grep -h "loaded into" "$WORK"/accel.*.log || true
  grep -h -E "decision|shm ring" "$WORK"/accel.*.log || echo "(no decisions logged)"
else
  echo "(no log files: was the library loaded?)"
  exit 1
fi
