#!/bin/sh
# Public structs have no implicit padding and the layouts that
# tests/abi_layout.c asserts, natively and, where the compiler can target it,
# on i386 (-m32). Usage: check_layout.sh CC INCLUDE_DIR LAYOUT_C [m32]
set -eu
cc="$1" inc="$2" layout="$3" mode="${4:-native}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#include <moemlora/moemlora.h>\n#include <moemlora/testing.h>\n' >"$tmp/all.c"
flags=""
if [ "$mode" = m32 ]; then
  echo 'int main(void) { return 0; }' >"$tmp/probe.c"
  if ! "$cc" -m32 -c "$tmp/probe.c" -o "$tmp/probe.o" 2>/dev/null; then
    echo "$cc cannot target i386 (-m32; install gcc-multilib): skipped"
    exit 77
  fi
  flags="-m32"
fi
# shellcheck disable=SC2086
"$cc" $flags -std=c11 -Wpadded -Werror -fsyntax-only -I"$inc" "$tmp/all.c"
# shellcheck disable=SC2086
"$cc" $flags -std=c11 -Werror -fsyntax-only -I"$inc" "$layout"
echo "no padding and the asserted layouts hold ($mode)"
