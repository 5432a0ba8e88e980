#!/bin/sh
# The built library against the ABI baseline abi/libmoemlora.abi (abidiff,
# from abigail-tools). Fails on an abidiff error and on any ABI change other
# than those tests/abi.suppr accepts (added functions or variables, a data
# member appended at the end of a struct): a removed function, a changed
# signature, a member inserted or removed in the middle, a changed type, ...
# Added symbols are listed. Exit 77 (skipped) when abidiff is not installed.
# After an intended change: scripts/abi-baseline rewrites the baseline.
# Usage: check_abi.sh BASELINE.abi LIBRARY.so HEADER_DIR SUPPRESSIONS
set -eu
baseline="$1"; lib="$2"; headers="$3"; suppr="$4"
if ! command -v abidiff >/dev/null 2>&1; then
  echo "abidiff is not installed: skipped (scripts/install-deps installs abigail-tools)"
  exit 77
fi
if [ ! -f "$baseline" ]; then
  echo "no ABI baseline $baseline: run scripts/abi-baseline"
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The verdict. abidiff's exit status is a bit mask: 1 error, 2 usage error,
# 4 ABI change, 8 incompatible ABI change.
rc=0
# Without debug info abidiff would compare symbol names only: an error here.
# --drop-private-types: the opaque structs (mml_ctx, ...) are declarations
# only on both sides, as in the baseline (abidiff 2.2 also crashes on a
# decl-only/defined pair under the appended-member suppression).
abidiff --no-added-syms --fail-no-debug-info --exported-interfaces-only \
  --drop-private-types --headers-dir2 "$headers" --suppressions "$suppr" \
  "$baseline" "$lib" >"$tmp/report" 2>&1 || rc=$?
[ -s "$tmp/report" ] && cat "$tmp/report"

# Added (and removed) symbols, by name: the baseline's ELF symbols against
# the library's dynamic ones.
sed -n "s/.*<elf-symbol name='\([^']*\)'.*/\1/p" "$baseline" | LC_ALL=C sort -u >"$tmp/old"
nm -D --defined-only "$lib" | awk '$2 != "A" {print $NF}' | sed 's/@.*//' |
  LC_ALL=C sort -u >"$tmp/new"
added=$(LC_ALL=C comm -13 "$tmp/old" "$tmp/new")
removed=$(LC_ALL=C comm -23 "$tmp/old" "$tmp/new")
if [ -n "$added" ]; then
  echo "added symbols (allowed; they belong in the newest node of lib/libmoemlora.map):"
  echo "$added" | sed 's/^/  /'
fi
if [ -n "$removed" ]; then
  echo "removed symbols:"
  echo "$removed" | sed 's/^/  /'
fi

fail=0
if [ "$rc" -gt 15 ]; then
  echo "abi: abidiff crashed or was killed (exit status $rc)"; exit 1
fi
[ $((rc & 1)) -ne 0 ] && { echo "abi: abidiff failed (exit status $rc)"; fail=1; }
[ $((rc & 2)) -ne 0 ] && { echo "abi: abidiff usage error (exit status $rc)"; fail=1; }
[ $((rc & 4)) -ne 0 ] && { echo "abi: the ABI changed (abidiff exit status $rc)"; fail=1; }
[ $((rc & 8)) -ne 0 ] && { echo "abi: incompatible ABI change (abidiff exit status $rc)"; fail=1; }
if [ "$fail" -ne 0 ]; then
  echo "abi: if the change is intended, rewrite the baseline with scripts/abi-baseline"
  exit 1
fi
echo "abi: no ABI change against $(basename "$baseline")" \
  "($(wc -l <"$tmp/old") baseline symbols, $(echo "$added" | grep -c . || true) added)"
