#!/bin/sh
# Doxygen INPUT_FILTER (docs/Doxyfile.in): passes a header through and adds an
# empty "@file" block at its end. Doxygen lists (and warns about) the
# functions, typedefs and macros of a header only when the header itself is
# documented; with this, an undocumented function is reported even in a
# header that has no "@file" block yet (the docs test requires one anyway).
# Lines keep their numbers.
cat "$1"
echo '/** @file */'
