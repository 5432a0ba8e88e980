#!/bin/sh
# Installs into a temporary root and builds a consumer with pkg-config alone.
set -eu
build="$1"; src="$2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
pc=$(find "$tmp/root" -name moemlora.pc | head -n 1)
[ -n "$pc" ] || { echo "moemlora.pc not installed"; exit 1; }
[ -f "$(find "$tmp/root" -path '*/include/moemlora/moemlora.h' | head -n 1)" ] || { echo "headers not installed"; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")" PKG_CONFIG_SYSROOT_DIR="$tmp/root"
flags=$(pkg-config --cflags --libs moemlora)
libdir=$(dirname "$(find "$tmp/root" -name "libmoemlora.so.1" | head -n 1)")
${CC:-cc} -std=c11 -Wall -Werror -o "$tmp/consumer" "$src" $flags
LD_LIBRARY_PATH="$libdir" "$tmp/consumer"
