#!/bin/sh
# End to end: mml-train's exit codes, output and JSON keys on a tiny synthetic set.
set -u
exe="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$exe" --bogus >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] || fail "unknown option must exit 2"
grep -q "unknown option" "$tmp/err" || fail "no usage error message"
"$exe" --variant nope >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad variant must exit 2"
"$exe" --movielens /nonexistent >/dev/null 2>&1; [ $? -eq 2 ] || fail "--movielens without --domain-by must exit 2"
"$exe" --movielens "$tmp/none" --domain-by age >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] || fail "missing data must exit 1"
[ -s "$tmp/err" ] || fail "no message for missing data"
"$exe" --help >/dev/null || fail "--help must exit 0"
"$exe" --optimizer nope >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad optimiser must exit 2"

small="--synthetic-rows 3000 --synthetic-domains 3 --hidden 16,8 --batch 256 --max-epochs 2 --threads 1"
# shellcheck disable=SC2086
"$exe" $small --variant all --seeds 1,2 --json "$tmp/all.json" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err"; fail "training run failed"; }
grep -q "summary over seeds" "$tmp/out" || fail "no side-by-side summary"
grep -q "WAUC" "$tmp/out" || fail "no WAUC in the table"
# shellcheck disable=SC2086
"$exe" $small --variant moe --seed 3 --json "$tmp/one.json" >/dev/null 2>&1 || fail "single run failed"
# The layer extras are reachable from the command line.
# shellcheck disable=SC2086
"$exe" $small --variant moe --experts-per-domain 2 --gate-top-k 1 --optimizer lazy-adam \
  --l2-embedding 1e-4 --l2-dense 1e-5 --json "$tmp/extras.json" >/dev/null 2>&1 || fail "extras run failed"
# A failing run writes no JSON.
"$exe" --train "$tmp/x.csv" --val "$tmp/x.csv" --test "$tmp/x.csv" --json "$tmp/bad.json" >/dev/null 2>&1
[ $? -eq 1 ] || fail "missing CSV must exit 1"
[ ! -e "$tmp/bad.json" ] || fail "JSON written on failure"
# Splits round trip through the CSV reader.
mkdir "$tmp/splits"
# shellcheck disable=SC2086
"$exe" --synthetic-rows 3000 --synthetic-domains 3 --write-splits "$tmp/splits" || fail "write-splits failed"
# shellcheck disable=SC2086
"$exe" --train "$tmp/splits/train.csv" --val "$tmp/splits/val.csv" --test "$tmp/splits/test.csv" \
  --hidden 16,8 --batch 256 --max-epochs 1 --threads 1 --variant mlora >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "CSV training failed"; }

python3 - "$tmp/all.json" "$tmp/one.json" "$tmp/extras.json" <<'PY' || fail "JSON keys"
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
assert len(runs) == 6, len(runs)
one = json.load(open(sys.argv[2]))
need = ["backbone", "variant", "seed", "threads", "domains", "mean_auc", "wauc", "logloss", "stages"]
moe_need = ["gate", "gate_init", "experts", "after_backbone", "own_experts"]
for r in runs + [one]:
    for k in need:
        assert k in r, k
    for d in r["domains"]:
        for k in ["id", "name", "n_test", "auc", "logloss"]:
            assert k in d, k
    for s in r["stages"]:
        for k in ["name", "epochs", "best_val", "seconds", "train_rows_per_s"]:
            assert k in s, k
    names = [s["name"] for s in r["stages"]]
    if r["variant"] == "moe":
        assert names == ["backbone", "experts", "gate"], names
        for k in moe_need:
            assert k in r, k
        assert len(r["gate"]) == 3 and len(r["gate"][0]) == 3
        assert abs(sum(r["gate"][0]) - 1) < 1e-5
        assert len(r["experts"]) == 3 and r["experts"][2]["domain"] == 2
        for k in ["mean_auc", "wauc"]:
            assert k in r["after_backbone"] and k in r["own_experts"]
    else:
        assert names == ["joint"], names
        assert "gate" not in r
base = [r for r in runs if r["variant"] == "base" and r["seed"] == 1][0]
moe = [r for r in runs if r["variant"] == "moe" and r["seed"] == 1][0]
assert base["wauc"] == moe["after_backbone"]["wauc"], (base["wauc"], moe["after_backbone"])
extras = json.load(open(sys.argv[3]))
for row in extras["gate"]:
    assert sum(1 for w in row if w > 0) == 1, row  # top-1 gate keeps one expert
PY
# Undefined AUCs read n/a and null, never 0 (10 rows: no domain holds both classes).
"$exe" --synthetic-rows 10 --variant base --json "$tmp/tiny.json" >"$tmp/tiny.out" 2>&1 ||
  { cat "$tmp/tiny.out"; echo "mml-train on 10 rows failed"; exit 1; }
grep -q "mean AUC n/a  WAUC n/a" "$tmp/tiny.out" || { cat "$tmp/tiny.out"; echo "no n/a"; exit 1; }
python3 - "$tmp/tiny.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["wauc"] is None and r["mean_auc"] is None, r
assert r["stages"][0]["best_val"] is None and r["stages"][0]["unvalidated"] is True, r["stages"]
PY
# A learning rate that diverges stops with a clear message and exit status 1.
if "$exe" --synthetic-rows 2000 --variant base --lr 10 >"$tmp/lr.out" 2>&1; then
  echo "--lr 10 did not fail"; exit 1
fi
grep -q "diverged" "$tmp/lr.out" || { cat "$tmp/lr.out"; echo "no divergence message"; exit 1; }
echo "mml-train end to end: ok"
