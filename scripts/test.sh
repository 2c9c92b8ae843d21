#!/usr/bin/env bash
# The whole test suite: system tools, release build, unit tests and the integration tests
# (stock programs run plain and under LD_PRELOAD=libaccel.so, errno probes).
# Exits non-zero on any failure. Integration tests pick free ports and own temp directories, so
# cargo's parallel test threads do not collide; ACCEL_TEST_THREADS overrides the thread count.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
step() { printf '\n==== %s ====\n' "$*"; }

step "setup (system packages)"
bash scripts/setup.sh

step "build: cargo build --release --workspace"
cargo build --release --workspace

# Settings of the library in the caller's environment would change what the tests observe.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(\(ACCEL\|VMA\)_[A-Za-z0-9_]*\)=.*/\1/p')
unset LD_PRELOAD

step "test: cargo test --release --workspace"
log=$(mktemp /tmp/accel-test-log.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --no-fail-fast -- --test-threads="${ACCEL_TEST_THREADS:-2}" 2>&1 \
  | tee "$log" || status=$?

elapsed=$(( $(date +%s) - start ))
passed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) passed; .*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) failed; .*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')

step "summary"
echo "tests passed: $passed, failed: $failed, time: ${elapsed}s"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
  echo "failing tests:"
  grep -E '^test .* FAILED$' "$log" | sed 's/^test /  /; s/ \.\.\. FAILED$//' || true
  echo "RESULT: FAIL"
  exit 1
fi
echo "RESULT: PASS"
