#!/bin/sh
# Runs Doxygen over the public headers (docs/Doxyfile.in, as configured into
# the build dir) and fails on any warning, printing them: an undocumented
# function, type, member, parameter or return value, or bad markup.
# Exit 77 (skipped) when doxygen is not installed.
# Every header also needs its own "@file" block: without one, Doxygen would
# not list the header's functions at all.
# Usage: check_docs.sh DOXYFILE HEADER_DIR
set -eu
doxyfile="$1"; headers="$2"
if ! command -v doxygen >/dev/null 2>&1; then
  echo "doxygen is not installed: skipped (scripts/install-deps installs it)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0
# The configured file, with the output and the warnings redirected here.
{ cat "$doxyfile"
  echo "OUTPUT_DIRECTORY = \"$tmp/out\""
  echo "WARN_LOGFILE = \"$tmp/warnings\""
} | doxygen - >"$tmp/log" 2>&1 || rc=$?
touch "$tmp/warnings"
for h in "$headers"/*.h; do
  grep -q -E '[@\\]file' "$h" ||
    echo "$h:1: error: no @file block: the header is not documented" >>"$tmp/warnings"
done
# With WARN_AS_ERROR, doxygen labels its warnings "error:".
count=$(grep -c -E '(warning|error): ' "$tmp/warnings" || true)
if [ "$rc" -ne 0 ] || [ -s "$tmp/warnings" ]; then
  cat "$tmp/log" "$tmp/warnings"
  echo "docs: $count warnings (doxygen exit status $rc)"
  exit 1
fi
echo "docs: no doxygen warnings"
