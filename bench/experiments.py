#!/usr/bin/env python3
"""The MoE-MLoRA option grid of docs/EXPERIMENTS.md: runs mml-train once per
(data set, configuration, seed), sequentially, at nice 10, keeps each run's
JSON in --out (a second call reuses them), and prints one Markdown table:
test WAUC mean +- sample std over the seeds, the difference to MLoRA and to
the shared model, the gate's mean weight on each domain's own experts, and
the command of every row.

    bench/experiments.py --out /tmp/mml-exp                # every data set
    bench/experiments.py --out /tmp/mml-exp --data synth   # a few
    bench/experiments.py --out /tmp/mml-exp --configs base,mlora,moe,moe-tuned

ML-100K rows need --movielens DIR (default ../shared/data/ml-100k when it
exists); they are skipped without it.
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Data sets: the flags that select them.
DATA = {
    "synth": [],
    "synth-hard": ["--synthetic-domains", "8", "--synthetic-domain-scale", "3",
                   "--synthetic-shift-scale", "3", "--synthetic-rows", "24000"],
    "synth-same": ["--synthetic-domain-scale", "0", "--synthetic-shift-scale", "0"],
    "ml-gender": ["--movielens", "{ml}", "--domain-by", "gender"],
    "ml-age": ["--movielens", "{ml}", "--domain-by", "age"],
    "ml-occupation": ["--movielens", "{ml}", "--domain-by", "occupation"],
}

# Configurations: name -> mml-train flags.
MOE = ["--variant", "moe"]
TUNED = ["--variant", "moe-tuned"]
CONFIGS = {
    "base": ["--variant", "base"],
    "mlora": ["--variant", "mlora"],
    "moe": MOE,
    # each option alone
    "prior2": MOE + ["--gate-prior", "2"],
    "gate-lr1e-2": MOE + ["--gate-lr", "1e-2"],
    "expert-lr3e-3": MOE + ["--expert-lr", "3e-3"],
    "expert-bb1e-3": MOE + ["--expert-backbone-lr", "1e-3"],
    "other0.1": MOE + ["--expert-other-weight", "0.1"],
    "in-emb": MOE + ["--gate-input", "embeddings"],
    "ft-eg": MOE + ["--finetune", "experts-gate"],
    "ft-all": MOE + ["--finetune", "all"],
    "ft-all+pat5": MOE + ["--finetune", "all", "--finetune-patience", "5"],
    # combinations (A: prior2 + gate-lr1e-2 + ft-all, stage 4 patience 5)
    "prior2+glr": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2"],
    "prior2+glr+ft-all": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2", "--finetune", "all"],
    "A": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2", "--finetune", "all",
                "--finetune-patience", "5"],
    "A+expert-bb1e-3": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2", "--finetune", "all",
                              "--finetune-patience", "5", "--expert-backbone-lr", "1e-3"],
    "A+other0.1": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2", "--finetune", "all",
                         "--finetune-patience", "5", "--expert-other-weight", "0.1"],
    "A+in-emb-grad": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2", "--finetune", "all",
                            "--finetune-patience", "5", "--gate-input", "embeddings-grad"],
    "A+prior4": MOE + ["--gate-prior", "4", "--gate-lr", "1e-2", "--finetune", "all",
                       "--finetune-patience", "5"],
    "A+pat10": MOE + ["--gate-prior", "2", "--gate-lr", "1e-2", "--finetune", "all",
                      "--finetune-patience", "10"],
    # the recommendation (mml_trainer_options_moe_tuned()): A+pat10
    "moe-tuned": TUNED,
}
# The configurations run on ML-100K (its runs take longer).
ML_CONFIGS = ["base", "mlora", "moe", "prior2", "gate-lr1e-2", "other0.1", "in-emb", "ft-all",
              "prior2+glr", "A", "A+expert-bb1e-3", "A+pat10", "moe-tuned"]

SEEDS = [1, 2, 3]


def mean_sd(x):
    m = sum(x) / len(x)
    sd = math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1)) if len(x) > 1 else 0.0
    return m, sd


def own_weights(run):
    """Each domain's gate weight on its own experts (e mod D == d), summed
    over them (the uniform gate gives m / E = 1 / D); None without a gate.
    A gate over the rows' embeddings reports its weights at x = 0."""
    gate = run.get("gate")
    if not gate:
        return None
    D = len(gate)
    return [sum(w for e, w in enumerate(row) if e % D == d) for d, row in enumerate(gate)]


def command(exe, data_flags, cfg_flags, seed, threads):
    return [exe] + data_flags + cfg_flags + ["--seed", str(seed), "--threads", str(threads), "--quiet"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", default=os.path.join(ROOT, "build", "examples", "mml-train"))
    ap.add_argument("--out", required=True, help="directory for the runs' JSON")
    default_ml = os.path.join(os.path.dirname(ROOT), "shared", "data", "ml-100k")
    ap.add_argument("--movielens", default=default_ml if os.path.isdir(default_ml) else None)
    ap.add_argument("--data", default=",".join(DATA))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--all-on-ml", dest="ml_subset", action="store_false",
                    help="run every configuration on ML-100K too (default: ML_CONFIGS)")
    ap.add_argument("--cached-only", action="store_true",
                    help="table of the runs already in --out; run nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    datas = [d for d in a.data.split(",") if d]
    cfgs = [c for c in a.configs.split(",") if c]
    rows = []
    for dname in datas:
        if dname.startswith("ml-") and not a.movielens:
            print(f"skipping {dname}: no --movielens", file=sys.stderr)
            continue
        dflags = [f.format(ml=a.movielens) for f in DATA[dname]]
        res = {}
        for cname in cfgs:
            if dname.startswith("ml-") and a.ml_subset and cname not in ML_CONFIGS:
                continue
            runs = []
            for seed in seeds:
                path = os.path.join(a.out, f"{dname}__{cname}__{seed}.json")
                cmd = command(a.exe, dflags, CONFIGS[cname], seed, a.threads) + ["--json", path]
                if a.dry_run:
                    print(shlex.join(["nice", "-n", "10"] + cmd))
                    continue
                if not os.path.exists(path) and a.cached_only:
                    continue
                if not os.path.exists(path):
                    subprocess.run(["nice", "-n", "10"] + cmd, check=True, stdout=subprocess.DEVNULL)
                with open(path) as f:
                    runs.append(json.load(f))
            if runs:
                res[cname] = runs
        for cname, runs in res.items():
            w = [r["wauc"] for r in runs]
            m, sd = mean_sd(w)
            ow = [own_weights(r) for r in runs]
            ow = [x for x in ow if x is not None]
            own = None
            if ow:
                flat = [v for x in ow for v in x]
                own = (sum(flat) / len(flat), min(flat), max(flat))
            ref = {}
            for other in ("mlora", "base"):
                if other in res:
                    om, osd = mean_sd([r["wauc"] for r in res[other]])
                    ref[other] = (m - om, max(sd, osd))
            rows.append((dname, cname, m, sd, ref, own,
                         sum(sum(s["seconds"] for s in r["stages"]) for r in runs) / len(runs)))
    if a.dry_run:
        return
    print("| data | configuration | WAUC (mean ± std, seeds %s) | vs MLoRA | vs base (spread) | "
          "gate on own: mean (min..max) | train s |" % a.seeds)
    print("|---|---|---|---|---|---|---|")
    for dname, cname, m, sd, ref, ow, secs in rows:
        vm = "%+.4f" % ref["mlora"][0] if "mlora" in ref else ""
        vb = "%+.4f (%.4f)" % ref["base"] if "base" in ref else ""
        print(f"| {dname} | {cname} | {m:.4f} ± {sd:.4f} | {vm} | {vb} | "
              f"{'' if ow is None else '%.2f (%.2f..%.2f)' % ow} | {secs:.1f} |")
    print()
    print("Commands (add --seed S --threads %d --json FILE; run under nice -n 10):" % a.threads)
    print()
    for dname in datas:
        if dname.startswith("ml-") and not a.movielens:
            continue
        print(f"- {dname}: `mml-train {shlex.join([f.format(ml='DIR') for f in DATA[dname]])}`")
    for cname in cfgs:
        print(f"- {cname}: `{shlex.join(CONFIGS[cname])}`")


if __name__ == "__main__":
    main()
