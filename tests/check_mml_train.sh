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
# The MoE options of 1.3 and the synthetic scales (stage 4 shows in the JSON).
# shellcheck disable=SC2086
"$exe" $small --variant moe --gate-prior 1 --gate-lr 1e-2 --expert-lr 2e-3 --expert-backbone-lr 1e-4 \
  --expert-other-weight 0.2 --finetune experts-gate --finetune-lr 1e-4 --finetune-patience 1 \
  --gate-input embeddings --synthetic-domain-scale 1 --synthetic-shift-scale 1 \
  --json "$tmp/tuned.json" >/dev/null 2>&1 || fail "1.3 options run failed"
grep -q '"finetune"' "$tmp/tuned.json" || fail "no stage 4 in the JSON"
grep -q '"after_gate"' "$tmp/tuned.json" || fail "no after_gate in the JSON"
"$exe" --finetune sometimes >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --finetune must exit 2"
"$exe" --expert-other-weight 2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --expert-other-weight must exit 2"
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
# base, mlora, moe and (since 1.3) moe-tuned, two seeds each
assert len(runs) == 8, len(runs)
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
    elif r["variant"] == "moe-tuned":
        assert names[:3] == ["backbone", "experts", "gate"], names
        for k in moe_need:
            assert k in r, k
        assert abs(sum(r["gate"][0]) - 1) < 1e-5
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

# Model files. A run killed after a checkpoint and resumed from it gives the
# same numbers as a run never interrupted: once inside stage 2, once inside stage 3.
# shellcheck disable=SC2086
"$exe" $small --variant moe --seed 4 --json "$tmp/ref.json" --save "$tmp/moe.mml" >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err"; fail "reference run failed"; }
[ -s "$tmp/moe.mml" ] || fail "--save wrote no model"
for stop in 3 9; do
  rm -f "$tmp/ck.mml"
  # shellcheck disable=SC2086
  "$exe" $small --variant moe --seed 4 --checkpoint "$tmp/ck.mml" --stop-after $stop \
    --json "$tmp/stopped.json" >/dev/null 2>"$tmp/err"
  [ $? -eq 3 ] || { cat "$tmp/err"; fail "--stop-after $stop must exit 3"; }
  grep -q "resume" "$tmp/err" || fail "no hint to resume"
  [ ! -e "$tmp/stopped.json" ] || fail "JSON written by a stopped run"
  [ -s "$tmp/ck.mml" ] || fail "no checkpoint"
  # shellcheck disable=SC2086
  "$exe" $small --variant moe --seed 4 --resume "$tmp/ck.mml" --checkpoint "$tmp/ck.mml" \
    --json "$tmp/resumed$stop.json" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "resume after $stop epochs failed"; }
done
# The atomic saves (a temporary file renamed over the name) leave nothing behind.
left=$(ls -a "$tmp" | grep -e '\.mml.')
[ -z "$left" ] || fail "files left behind: $left"
# Re-run stages 2 and 3 of the saved model; fine-tune a saved shared model.
# shellcheck disable=SC2086
"$exe" $small --variant moe --seed 5 --init "$tmp/moe.mml" --stage experts --json "$tmp/rerun.json" \
  >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail "--init --stage experts failed"; }
# shellcheck disable=SC2086
"$exe" $small --variant base --seed 4 --save "$tmp/base.mml" >/dev/null 2>&1 || fail "base --save failed"
# shellcheck disable=SC2086
"$exe" $small --variant base --seed 4 --init "$tmp/base.mml" --json "$tmp/tuned.json" >/dev/null 2>"$tmp/err" ||
  { cat "$tmp/err"; fail "fine-tuning failed"; }
# Refusals.
# shellcheck disable=SC2086
"$exe" $small --variant moe --seed 4 --resume "$tmp/moe.mml" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] || fail "--resume of a plain model must exit 1"
grep -q "no trainer state" "$tmp/err" || { cat "$tmp/err"; fail "no message for a model without state"; }
# shellcheck disable=SC2086
"$exe" $small --batch 128 --variant moe --seed 4 --resume "$tmp/ck.mml" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] || fail "--resume with another batch size must exit 1"
grep -q "batch_size" "$tmp/err" || { cat "$tmp/err"; fail "the refused option is not named"; }
# shellcheck disable=SC2086
"$exe" $small --variant mlora --seed 4 --init "$tmp/moe.mml" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] || fail "--init of another variant's model must exit 1"
"$exe" --variant all --save "$tmp/x.mml" >/dev/null 2>&1; [ $? -eq 2 ] || fail "--save with all variants must exit 2"
"$exe" --stage nope >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --stage must exit 2"
"$exe" --resume "$tmp/ck.mml" --stage gate >/dev/null 2>&1; [ $? -eq 2 ] || fail "--resume with --stage must exit 2"

# --quiet prints nothing on stdout; --log-format json gives one JSON object per stderr line.
# shellcheck disable=SC2086
"$exe" $small --variant moe --seed 4 --quiet >"$tmp/quiet.out" 2>&1 || fail "--quiet run failed"
[ ! -s "$tmp/quiet.out" ] || { cat "$tmp/quiet.out"; fail "--quiet printed something"; }
# shellcheck disable=SC2086
"$exe" $small --variant moe --seed 4 --quiet --log-format json --json "$tmp/logjson.json" \
  >"$tmp/log.out" 2>"$tmp/log.err" || fail "--log-format json run failed"
[ ! -s "$tmp/log.out" ] || fail "--quiet --log-format json printed on stdout"
python3 - "$tmp/log.err" <<'PY' || fail "--log-format json lines"
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
epochs = [e for e in events if e["event"] == "epoch"]
assert {e["stage"] for e in epochs} == {"backbone", "experts", "gate"}, epochs
for e in epochs:
    assert e["best_validation"] >= e["validation"] - 1e-12, e
PY
"$exe" --log-format xml >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --log-format must exit 2"

# --plot DIR: the data files and script always; the PNGs when gnuplot is installed;
# without gnuplot it says so and still succeeds.
# shellcheck disable=SC2086
"$exe" $small --variant all --seed 4 --quiet --plot "$tmp/plots" 2>"$tmp/plot.err" || fail "--plot run failed"
for f in domain_auc.dat validation.dat gate.dat plots.gp; do
  [ -s "$tmp/plots/$f" ] || fail "--plot did not write $f"
done
if command -v gnuplot >/dev/null 2>&1; then
  for f in domain_auc.png validation.png gate.png; do
    head -c 8 "$tmp/plots/$f" | od -An -c | grep -q "P   N   G" || fail "--plot did not draw $f"
  done
fi
# shellcheck disable=SC2086
PATH=/nonexistent "$exe" $small --variant moe --seed 4 --quiet --plot "$tmp/plots2" 2>"$tmp/plot2.err" ||
  fail "--plot without gnuplot must still succeed"
grep -q "gnuplot not found" "$tmp/plot2.err" || { cat "$tmp/plot2.err"; fail "no word about gnuplot"; }
[ -s "$tmp/plots2/gate.dat" ] || fail "--plot without gnuplot wrote no data files"

# --add-domain: a model of the first two synthetic domains gains the third;
# the old domains' predictions keep their bits (exit 4 otherwise).
# shellcheck disable=SC2086
"$exe" $small --synthetic-domains 3 --drop-domain d2 --seed 2 --quiet --save "$tmp/two.mml" ||
  fail "--drop-domain run failed"
# shellcheck disable=SC2086
"$exe" $small --synthetic-domains 3 --init "$tmp/two.mml" --add-domain --seed 2 --quiet \
  --json "$tmp/added.json" --save "$tmp/three.mml" || fail "--add-domain failed"
python3 - "$tmp/added.json" <<'PY' || fail "--add-domain JSON"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["old_domains_unchanged"] is True and r["old_rows_compared"] > 0, r
assert r["new_domain"] == "d2" and [d["name"] for d in r["domains"]] == ["d0", "d1", "d2"], r
assert r["new_domain_auc"] is not None
PY
# shellcheck disable=SC2086
"$exe" $small --synthetic-domains 3 --init "$tmp/three.mml" --add-domain --seed 2 --quiet \
  2>"$tmp/add.err"; [ $? -eq 1 ] || fail "--add-domain without a new domain must fail"
grep -q "no new domain" "$tmp/add.err" || { cat "$tmp/add.err"; fail "no word about the missing domain"; }
"$exe" --add-domain 2>/dev/null; [ $? -eq 2 ] || fail "--add-domain without --init must exit 2"

python3 - "$tmp/ref.json" "$tmp/resumed3.json" "$tmp/resumed9.json" "$tmp/rerun.json" "$tmp/tuned.json" <<'PY' || fail "resumed JSON"
import json, sys
ref = json.load(open(sys.argv[1]))
for path in sys.argv[2:4]:
    r = json.load(open(path))
    for k in ["mean_auc", "wauc", "logloss", "gate"]:
        assert r[k] == ref[k], (path, k, r[k], ref[k])
    assert [(d["auc"], d["logloss"]) for d in r["domains"]] == \
           [(d["auc"], d["logloss"]) for d in ref["domains"]], path
    assert [(s["name"], s["epochs"], s["best_val"]) for s in r["stages"]] == \
           [(s["name"], s["epochs"], s["best_val"]) for s in ref["stages"]], path
    assert [(e["epochs"], e["best_val"]) for e in r["experts"]] == \
           [(e["epochs"], e["best_val"]) for e in ref["experts"]], path
rerun = json.load(open(sys.argv[4]))
assert [s["name"] for s in rerun["stages"]] == ["experts", "gate"], rerun["stages"]
assert "after_backbone" not in rerun and "own_experts" in rerun
tuned = json.load(open(sys.argv[5]))
assert [s["name"] for s in tuned["stages"]] == ["joint"]
PY
exit 0
