#!/bin/sh
# The shared library exports exactly the mml_ API (plus the version node).
set -eu
lib="$1"
bad=$(nm -D --defined-only "$lib" | awk '{print $NF}' | sed 's/@.*//' | grep -v -E '^(mml_[a-z0-9_]+|MOEMLORA_[0-9]+)$' || true)
count=$(nm -D --defined-only "$lib" | awk '{print $NF}' | grep -c '^mml_' || true)
if [ -n "$bad" ]; then
  echo "unexpected exported symbols:"; echo "$bad"; exit 1
fi
if [ "$count" -lt 10 ]; then
  echo "only $count mml_ symbols exported"; exit 1
fi
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libmoemlora.so.0" ] || { echo "soname is '$soname'"; exit 1; }
echo "$count mml_ symbols, soname $soname"
