#!/usr/bin/env bash
# Installs the accel tool and library under a prefix:
#   PREFIX/bin/accel          (mode 0755)
#   PREFIX/lib/libaccel.so    (mode 0644)
# `accel run` looks for <dir of accel>/../lib/libaccel.so, so the installed pair works together.
#
# Usage: scripts/install.sh [PREFIX]               install (default PREFIX: /usr/local)
#        scripts/install.sh --uninstall [PREFIX]   remove what install put there
# DESTDIR, if set, is put in front of PREFIX (for packaging). CARGO names the cargo to use.
#
# Builds the release artifacts first (`cargo build --release --workspace`, a no-op when they are
# up to date). Without cargo on PATH (e.g. under sudo) it installs already-built artifacts.
# Idempotent: files already identical are left alone. Files are replaced atomically (written
# beside the target, then renamed), so processes that have libaccel.so mapped are not disturbed.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

uninstall=0
prefix=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --uninstall) uninstall=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *)
      if [ -n "$prefix" ]; then
        echo "install.sh: more than one PREFIX given" >&2; usage >&2; exit 2
      fi
      prefix="$1" ;;
  esac
  shift
done
prefix="${prefix:-/usr/local}"
root="${DESTDIR:-}${prefix}"
bin_dst="$root/bin/accel"
lib_dst="$root/lib/libaccel.so"

if [ "$uninstall" -eq 1 ]; then
  for f in "$bin_dst" "$lib_dst"; do
    if [ -e "$f" ] || [ -L "$f" ]; then
      rm -f -- "$f"
      echo "removed   $f"
    else
      echo "absent    $f"
    fi
  done
  exit 0
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo="${CARGO:-cargo}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin_src="$target_dir/release/accel"
lib_src="$target_dir/release/libaccel.so"

if command -v "$cargo" >/dev/null 2>&1; then
  echo "building  release artifacts (cargo build --release --workspace)"
  (cd "$repo" && "$cargo" build --release --workspace)
elif [ -f "$bin_src" ] && [ -f "$lib_src" ]; then
  echo "note: cargo not found; installing the artifacts already built in $target_dir/release"
else
  echo "install.sh: cargo not found and $target_dir/release has no accel/libaccel.so to install" >&2
  echo "            build first (cargo build --release --workspace) or put cargo on PATH" >&2
  exit 1
fi
for f in "$bin_src" "$lib_src"; do
  [ -f "$f" ] || { echo "install.sh: build did not produce $f" >&2; exit 1; }
done

strip_cmd=""
if command -v strip >/dev/null 2>&1; then
  strip_cmd="strip"
else
  echo "note: strip not found; installing with debug info"
fi

# install_one SRC DST MODE: copy to a temporary file beside DST, strip debug info, and rename it
# over DST unless DST already has the same contents.
install_one() {
  local src="$1" dst="$2" mode="$3" tmp
  install -d -m 0755 -- "$(dirname -- "$dst")"
  tmp="$(mktemp "$(dirname -- "$dst")/.$(basename -- "$dst").XXXXXX")"
  # shellcheck disable=SC2064 # expand $tmp now: it is local to this call
  trap "rm -f -- '$tmp'" EXIT
  install -m "$mode" -- "$src" "$tmp"
  if [ -n "$strip_cmd" ]; then
    "$strip_cmd" --strip-debug -- "$tmp"
  fi
  if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s -- "$tmp" "$dst"; then
    rm -f -- "$tmp"
    chmod "$mode" -- "$dst"
    echo "unchanged $dst"
  else
    mv -f -- "$tmp" "$dst"
    echo "installed $dst"
  fi
  trap - EXIT
}

install_one "$bin_src" "$bin_dst" 0755
install_one "$lib_src" "$lib_dst" 0644

case ":${PATH}:" in
  *":$prefix/bin:"*) ;;
  *) [ -n "${DESTDIR:-}" ] || echo "note: $prefix/bin is not on PATH" ;;
esac
