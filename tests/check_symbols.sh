#!/bin/sh
# The shared library exports exactly the MML_API functions of the public
# headers, each under a MOEMLORA_ version node, with soname libmoemlora.so.1.
# Usage: check_symbols.sh LIBRARY.so HEADER_DIR
set -eu
lib="$1"; headers="$2"
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" != "libmoemlora.so.1" ]; then
  echo "soname is '$soname', expected libmoemlora.so.1"; status=1
fi

# "name@@NODE" / "name@NODE" per defined dynamic symbol; the version nodes
# themselves show up as absolute symbols named after the node.
nm -D --defined-only "$lib" | awk '$2 != "A" {print $NF}' | LC_ALL=C sort -u >"$tmp/versioned"
sed 's/@.*//' "$tmp/versioned" | LC_ALL=C sort -u >"$tmp/exported"
python3 "$here/../scripts/update-symbol-map" --list "$headers" | LC_ALL=C sort -u >"$tmp/declared"

count=$(wc -l <"$tmp/exported")
if [ "$(wc -l <"$tmp/declared")" -lt 10 ]; then
  echo "only $(wc -l <"$tmp/declared") MML_API declarations found in $headers"; status=1
fi

not_declared=$(LC_ALL=C comm -23 "$tmp/exported" "$tmp/declared")
if [ -n "$not_declared" ]; then
  echo "exported but not declared MML_API in $headers:"
  echo "$not_declared" | sed 's/^/  /'
  status=1
fi
not_exported=$(LC_ALL=C comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$not_exported" ]; then
  echo "declared MML_API but not exported (missing from lib/libmoemlora.map? run scripts/update-symbol-map; or not defined):"
  echo "$not_exported" | sed 's/^/  /'
  status=1
fi

unversioned=$(grep '^mml_' "$tmp/versioned" | grep -v -E '^mml_[A-Za-z0-9_]+@@?MOEMLORA_[0-9]+(\.[0-9]+)*$' || true)
if [ -n "$unversioned" ]; then
  echo "exported without a MOEMLORA_ version node:"
  echo "$unversioned" | sed 's/^/  /'
  status=1
fi

[ "$status" -eq 0 ] || exit "$status"
nodes=$(sed -n 's/.*@@\{0,1\}\(MOEMLORA_.*\)/\1/p' "$tmp/versioned" | LC_ALL=C sort -u | tr '\n' ' ' | sed 's/ $//')
echo "$count mml_ symbols (nodes: $nodes), soname $soname"
