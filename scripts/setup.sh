#!/usr/bin/env bash
# Installs every system tool the build, tests, demo and benchmarks use. Idempotent: a second run
# installs nothing. Needs root (CI runs as root); uses sudo when run as another user.
set -euo pipefail

packages=(
  build-essential pkg-config          # cc for C test probes and the exec* variadic shim
  netcat-openbsd socat iperf iperf3 sockperf curl python3
  iproute2 ethtool iputils-ping procps psmisc
  valgrind gnuplot-nox
  clang llvm libbpf-dev linux-libc-dev  # the XDP filter program (later datapath)
  tshark                               # capture tests read pcaps
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all system packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
