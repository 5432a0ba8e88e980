#!/bin/sh
# Data-parallel mml-train under mpirun, on one machine: 2 and 3 ranks end
# with the same weights on every rank (mml-train checks the ranks' digests
# and fails otherwise), repeat bit for bit, reach the one-process test WAUC
# within 0.002, resume a checkpoint bit for bit, and a failure on rank 1
# ends the whole job with a non-zero status instead of a hang.
# Usage: check_mpi.sh MML_TRAIN [yes|no: built with MPI]
set -u
exe="$1"
if [ "${2:-yes}" != "yes" ]; then
  echo "SKIP: mml-train was built without MPI (-Dmpi=disabled, or no MPI found)"
  exit 77
fi
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: no mpirun (Debian: openmpi-bin)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# CI runs as root; two cores, so three ranks oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
run() { np=$1; shift; timeout 120 mpirun --oversubscribe -np "$np" "$exe" "$@"; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

opts="--synthetic --synthetic-rows 24000 --variant mlora --hidden 32,16 --batch 256 --lr 3e-3
  --dropout 0 --max-epochs 8 --patience 50 --seed 3 --threads 1 --quiet"
# shellcheck disable=SC2086
"$exe" $opts --json "$tmp/one.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "one process (no mpirun)"; }
# shellcheck disable=SC2086
run 1 $opts --json "$tmp/np1.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "mpirun -np 1"; }
[ "$(field "$tmp/np1.json" weights_fnv1a)" = "$(field "$tmp/one.json" weights_fnv1a)" ] ||
  fail "one rank under mpirun differs from one process"
for np in 2 3; do
  # Two ranks twice: the same bits (three once, to keep the test short).
  for k in a b; do
    [ $np = 3 ] && [ $k = b ] && continue
    # shellcheck disable=SC2086
    run $np $opts --json "$tmp/np$np$k.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "mpirun -np $np ($k)"; }
  done
  [ "$(field "$tmp/np${np}a.json" ranks)" = "$np" ] || fail "$np ranks: the JSON says otherwise"
  [ $np = 3 ] || [ "$(field "$tmp/np${np}a.json" weights_fnv1a)" = "$(field "$tmp/np${np}b.json" weights_fnv1a)" ] ||
    fail "$np ranks: two runs differ"
  python3 - "$tmp/one.json" "$tmp/np${np}a.json" <<'PY' || fail "$np ranks: test WAUC too far from one process"
import json, sys
one, many = (json.load(open(p))["wauc"] for p in sys.argv[1:3])
print("test WAUC: one process %.5f, %s ranks %.5f" % (one, json.load(open(sys.argv[2]))["ranks"], many))
sys.exit(abs(one - many) > 0.002)
PY
done

# One file per rank (paths with %r): each rank reads only its own rows,
# mapped onto one shared vocabulary; with the files cut where the row ranges
# are cut, the same bits as every rank reading the whole files. A missing
# file of rank 1 stops every rank with its message.
"$exe" --synthetic --synthetic-rows 6000 --write-splits "$tmp" --quiet || fail "--write-splits"
for s in train val test; do
  python3 - "$tmp/$s.csv" <<'PY' || fail "cutting $s.csv"
import sys
path = sys.argv[1]
lines = open(path).read().splitlines()
head, rows, n = lines[0], lines[1:], len(lines) - 1
for r in range(2):
    lo, hi = n // 2 * r + n % 2 * r // 2, n // 2 * (r + 1) + n % 2 * (r + 1) // 2
    open(path[:-4] + ".%d.csv" % r, "w").write("\n".join([head] + rows[lo:hi]) + "\n")
PY
done
files="--variant mlora --hidden 16,8 --batch 256 --max-epochs 3 --threads 1 --quiet"
# shellcheck disable=SC2086
run 2 --train "$tmp/train.csv" --val "$tmp/val.csv" --test "$tmp/test.csv" $files \
  --json "$tmp/whole.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "2 ranks on whole files"; }
# shellcheck disable=SC2086
run 2 --train "$tmp/train.%r.csv" --val "$tmp/val.%r.csv" --test "$tmp/test.%r.csv" $files \
  --json "$tmp/shard.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "2 ranks on per-rank files"; }
[ "$(field "$tmp/whole.json" weights_fnv1a)" = "$(field "$tmp/shard.json" weights_fnv1a)" ] ||
  fail "per-rank files differ from whole files"
rm "$tmp/val.1.csv"
# shellcheck disable=SC2086
run 2 --train "$tmp/train.%r.csv" --val "$tmp/val.%r.csv" --test "$tmp/test.%r.csv" $files \
  --json "$tmp/f.json" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a missing file of rank 1: exit $rc"
grep -q "rank 1:.*val.1.csv" "$tmp/err" || { cat "$tmp/err"; fail "no message naming rank 1's file"; }

# A checkpoint after 4 epochs (MoE: inside stage 2), resumed: the same bits.
small="--synthetic --synthetic-rows 6000 --variant moe --hidden 16,8 --batch 256 --max-epochs 3
  --dropout 0.3 --threads 1 --quiet"
# shellcheck disable=SC2086
run 2 $small --json "$tmp/full.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "2 ranks, MoE"; }
# shellcheck disable=SC2086
run 2 $small --checkpoint "$tmp/ck.mml" --stop-after 4 >/dev/null 2>"$tmp/err"
[ $? -eq 3 ] || { cat "$tmp/err"; fail "--stop-after under mpirun must exit 3"; }
# shellcheck disable=SC2086
run 2 $small --resume "$tmp/ck.mml" --json "$tmp/res.json" 2>"$tmp/err" || { cat "$tmp/err"; fail "--resume under mpirun"; }
[ "$(field "$tmp/full.json" weights_fnv1a)" = "$(field "$tmp/res.json" weights_fnv1a)" ] ||
  fail "resumed 2-rank run differs from the uninterrupted one"

# Failures on rank 1: reading its data (every rank stops, rank 0 says why),
# and its 5th collective during training (the job is aborted).
# shellcheck disable=SC2086
MML_MPI_TEST_FAIL=1:0 run 3 $small --json "$tmp/f.json" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a data failure on rank 1: exit $rc"
grep -q "rank 1: injected failure" "$tmp/err" || { cat "$tmp/err"; fail "no message naming rank 1"; }
# shellcheck disable=SC2086
MML_MPI_TEST_FAIL=1:5 run 2 $small --json "$tmp/f.json" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a failure on rank 1 during training: exit $rc"
grep -q "rank 1 of 2" "$tmp/err" || { cat "$tmp/err"; fail "no message naming rank 1"; }
[ ! -e "$tmp/f.json" ] || fail "a failed job wrote its JSON"
echo "OK"
