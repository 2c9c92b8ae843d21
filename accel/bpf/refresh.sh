#!/bin/sh
# Rebuilds the checked-in XDP filter object and the hash of the source it was built from.
# Run after editing filter.c (needs clang); commit filter.c, filter.o and filter.c.sha256 together.
# The flags must stay those of accel/build.rs, so that the object is byte-identical to the build's.
set -eu
cd "$(dirname "$0")"
inc=""
for d in /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu; do
    [ -e "$d/asm/types.h" ] && inc="$inc -I$d"
done
# shellcheck disable=SC2086
${ACCEL_BPF_CLANG:-clang} -O2 -g -target bpf -Wall -Werror $inc \
    -fdebug-prefix-map="$(pwd)=." -fdebug-compilation-dir=. -c filter.c -o filter.o
sha256sum filter.c > filter.c.sha256
echo "refreshed: $(cat filter.c.sha256)"
