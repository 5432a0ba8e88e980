#!/bin/sh
# End to end: train a small model on CSV with mml-train --save, then serve
# raw CSV rows with mml-predict and serve (exit codes, messages, output).
set -u
train="$1" predict="$2" serve="$3"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Columns: a domain by name, a categorical user, a hashed item, a numeric
# price, a categorical city. The test rows hold cities and items that the
# training rows never had.
python3 - "$tmp" <<'PY' || fail "data generation"
import random, sys
d = sys.argv[1]
rnd = random.Random(7)
doms = ["news", "sport", "shop"]
def rows(n, unseen):
    out = []
    for _ in range(n):
        dom = rnd.choice(doms)
        user = "u%d" % rnd.randrange(30)
        item = "i%d" % rnd.randrange(300 if unseen else 200)
        price = round(rnd.uniform(0, 10), 3)
        city = rnd.choice(["paris", "rome", "oslo"] + (["atlantis"] if unseen else []))
        p = 0.2 + 0.5 * (dom == "sport") + 0.03 * price
        label = int(rnd.random() < min(p, 0.95))
        out.append("%d,%s,%s,%s,%s,%s" % (label, dom, user, item, price, city))
    return out
head = "label,domain,user,item,price,city"
for name, n, unseen in [("train", 1500, False), ("val", 300, False), ("test", 300, False),
                        ("input", 2600, True)]:
    with open("%s/%s.csv" % (d, name), "w") as f:
        f.write("\n".join([head] + rows(n, unseen)) + "\n")
PY

"$train" --train "$tmp/train.csv" --val "$tmp/val.csv" --test "$tmp/test.csv" --numeric price \
  --hash item:64 --variant base --hidden 16,8 --batch 256 --max-epochs 2 --threads 1 \
  --save "$tmp/model.mml" >"$tmp/train.out" 2>&1 || { cat "$tmp/train.out"; fail "training failed"; }
[ -s "$tmp/model.mml" ] || fail "no model file"
"$train" --hash item >/dev/null 2>&1; [ $? -eq 2 ] || fail "--hash without buckets must exit 2"

# Usage errors.
"$predict" >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] || fail "no --model must exit 2"
grep -q "usage: mml-predict" "$tmp/err" || fail "no usage text"
"$predict" --model "$tmp/model.mml" --bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown option must exit 2"
"$predict" --model "$tmp/model.mml" --batch 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--batch 0 must exit 2"
"$predict" --model "$tmp/model.mml" --blis-arch nope </dev/null >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad --blis-arch must exit 2"
"$predict" --help | grep -q -- "--skip-bad-rows" || fail "--help"
"$predict" --model "$tmp/none.mml" </dev/null >/dev/null 2>&1; [ $? -eq 1 ] || fail "missing model must exit 1"

# From a file, from standard input, to a file: the same bytes.
in="$tmp/input.csv"
rows=$(($(wc -l <"$in") - 1))
"$predict" --model "$tmp/model.mml" --input "$in" >"$tmp/p1" 2>"$tmp/err" || { cat "$tmp/err"; fail "mml-predict --input"; }
"$predict" --model "$tmp/model.mml" <"$in" >"$tmp/p2" || fail "mml-predict from stdin"
"$predict" --model "$tmp/model.mml" --input "$in" --output "$tmp/p3" || fail "mml-predict --output"
cmp -s "$tmp/p1" "$tmp/p2" || fail "--input and stdin differ"
cmp -s "$tmp/p1" "$tmp/p3" || fail "--output differs"
[ "$(wc -l <"$tmp/p1")" -eq "$rows" ] || fail "$(wc -l <"$tmp/p1") lines for $rows rows"
python3 - "$tmp/p1" <<'PY' || fail "values not probabilities"
import sys
v = [float(x) for x in open(sys.argv[1])]
assert all(0.0 <= x <= 1.0 for x in v), "outside [0, 1]"
assert len(set(v)) > 10, "constant output"
PY
"$predict" --model "$tmp/model.mml" --input "$in" --output /dev/full 2>"$tmp/err"
[ $? -eq 1 ] || fail "a write error must exit 1"
grep -q "write error" "$tmp/err" || fail "no write error message"

# serve, with 1 and 3 threads: the same bytes as mml-predict.
"$serve" --model "$tmp/model.mml" <"$in" >"$tmp/s1" || fail "serve --threads 1"
"$serve" --model "$tmp/model.mml" --threads 3 <"$in" >"$tmp/s3" || fail "serve --threads 3"
cmp -s "$tmp/p1" "$tmp/s1" || fail "serve (1 thread) differs from mml-predict"
cmp -s "$tmp/p1" "$tmp/s3" || fail "serve (3 threads) differs from mml-predict"
"$serve" >/dev/null 2>&1; [ $? -eq 2 ] || fail "serve without --model must exit 2"

# The label column is optional: the same probabilities without it.
cut -d, -f2- "$in" >"$tmp/nolabel.csv"
"$predict" --model "$tmp/model.mml" --input "$tmp/nolabel.csv" >"$tmp/p4" || fail "no label column"
cmp -s "$tmp/p1" "$tmp/p4" || fail "without the label column the output differs"
# A required column missing: exit 1, the column named.
cut -d, -f1-5 "$in" >"$tmp/nocity.csv"
"$predict" --model "$tmp/model.mml" --input "$tmp/nocity.csv" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] || fail "a missing column must exit 1"
grep -q "city" "$tmp/err" || fail "the missing column is not named"

# Unseen values: a city never seen takes the out-of-vocabulary id (one
# probability for all of them); hashed items never seen keep their own ids.
{
  echo "domain,user,item,price,city"
  for c in x1 x2 x3 x4 x5 x6 x7 x8; do echo "news,u1,i5,1.5,$c"; done
  for i in zz1 zz2 zz3 zz4 zz5 zz6 zz7 zz8; do echo "news,u1,$i,1.5,paris"; done
} >"$tmp/unseen.csv"
"$predict" --model "$tmp/model.mml" --input "$tmp/unseen.csv" >"$tmp/p5" || fail "unseen values"
[ "$(head -8 "$tmp/p5" | sort -u | wc -l)" -eq 1 ] || fail "unseen cities do not share the out-of-vocabulary id"
[ "$(tail -8 "$tmp/p5" | sort -u | wc -l)" -gt 1 ] || fail "unseen hashed items all predict the same"
grep -q nan "$tmp/p5" && fail "nan for unseen values"

# Bad rows: line 5 an unknown domain, a number that does not parse, a short row.
bad_file() { # line-5 replacement, output file
  { head -4 "$in"; echo "$1"; sed -n '6,20p' "$in"; } >"$2"
}
check_bad() { # file, replacement, expected column, what
  bad_file "$2" "$1"
  "$predict" --model "$tmp/model.mml" --input "$1" >"$tmp/out" 2>"$tmp/err"
  [ $? -eq 1 ] || fail "$4: exit status"
  grep -q "^$1:5:$3: " "$tmp/err" || { cat "$tmp/err"; fail "$4: no '$1:5:$3:' prefix"; }
  [ "$(wc -l <"$tmp/out")" -le 3 ] || fail "$4: output beyond the bad row"
  "$predict" --model "$tmp/model.mml" <"$1" >/dev/null 2>"$tmp/err"
  [ $? -eq 1 ] || fail "$4 (stdin): exit status"
  grep -q "^-:5:$3: " "$tmp/err" || { cat "$tmp/err"; fail "$4: no '-:5:$3:' prefix"; }
  "$predict" --model "$tmp/model.mml" --input "$1" --skip-bad-rows >"$tmp/out" 2>"$tmp/err" ||
    fail "$4: --skip-bad-rows must exit 0"
  [ "$(sed -n 4p "$tmp/out")" = nan ] || fail "$4: no nan at output line 4"
  [ "$(grep -c nan "$tmp/out")" -eq 1 ] || fail "$4: more than one nan"
  [ "$(wc -l <"$tmp/out")" -eq 19 ] || fail "$4: $(wc -l <"$tmp/out") lines, not 19"
  grep -q "^mml-predict: 1 bad rows skipped$" "$tmp/err" || { cat "$tmp/err"; fail "$4: no count"; }
  "$serve" --model "$tmp/model.mml" --threads 2 <"$1" >"$tmp/sout" 2>"$tmp/err" || fail "$4: serve"
  cmp -s "$tmp/out" "$tmp/sout" || fail "$4: serve differs from mml-predict --skip-bad-rows"
  grep -q "serve: 1 bad rows" "$tmp/err" || fail "$4: serve's count"
}
check_bad "$tmp/bad_domain.csv" "1,games,u1,i3,2.5,rome" 2 "unknown domain"
check_bad "$tmp/bad_number.csv" "1,news,u1,i3,cheap,rome" 5 "non-numeric value"
check_bad "$tmp/bad_short.csv" "1,news,u1,i3" 5 "short row"
check_bad "$tmp/bad_long.csv" "1,news,u1,i3,2.5,rome,extra" 7 "long row"
check_bad "$tmp/bad_quote.csv" '1,news,"u1,i3,2.5,rome' 3 "bad quoting"
# The messages name the column and the value.
bad_file "1,news,u1,i3,cheap,rome" "$tmp/b.csv"
"$predict" --model "$tmp/model.mml" --input "$tmp/b.csv" >/dev/null 2>"$tmp/err"
grep -q "field 'price'.*\"cheap\"" "$tmp/err" || { cat "$tmp/err"; fail "message without column and value"; }
bad_file "1,games,u1,i3,2.5,rome" "$tmp/b.csv"
"$predict" --model "$tmp/model.mml" --input "$tmp/b.csv" >/dev/null 2>"$tmp/err"
grep -q "field 'domain'.*\"games\"" "$tmp/err" || { cat "$tmp/err"; fail "domain message"; }
# Quoted cells are read as the CSV reader reads them.
{ echo 'label,domain,user,item,price,city'; sed -n 2p "$in" | awk -F, '{printf "%s,\"%s\",%s,%s,\"%s\",%s\n",$1,$2,$3,$4,$5,$6}'; } >"$tmp/q.csv"
"$predict" --model "$tmp/model.mml" --input "$tmp/q.csv" --batch 1 >"$tmp/q.out" || fail "quoted cells"
"$predict" --model "$tmp/model.mml" --input "$in" --batch 1 | head -1 >"$tmp/q.ref"
cmp -s "$tmp/q.out" "$tmp/q.ref" || fail "quoted cells give another probability"
exit 0
