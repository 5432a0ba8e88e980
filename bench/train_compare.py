#!/usr/bin/python3
"""Training speed side by side: `mml-bench train` (the library) and
bench/torch_reference.py (PyTorch, the same model and stages) in one run,
alternating, as ratios.

Usage (from the repository root, after ./scripts/build):
  /usr/bin/python3 bench/train_compare.py [--config ml100k|large|all]
      [--backbone mlp,deepfm] [--rounds 3] [--epochs 2] [--threads 2]
      [--bench build/bench/mml-bench] [--data ../shared/data]
      [--work /tmp/mml-train-compare] [--out FILE.md]

Both sides train the same rows: `mml-bench train --write-splits` writes each
configuration's train/val/test split (ML-100K by gender; the large synthetic
set of 1,000,000 rows) and PyTorch reads those files; the C side builds the
same data sets in memory (same loader, same seed). Same model (fields user,
item, domain; embedding 8 for ml100k, 16 for large; tower 256-128-64,
dropout 0.5, alpha 16, one expert per domain), Adam 1e-3, batch 1024,
--threads on both sides (the library's context threads; PyTorch
torch.set_num_threads), both on the best BLIS kernels of the CPU (Debian's
PyTorch multiplies through libblas.so.3, BLIS here, so the script gives it
the BLIS_ARCH_TYPE the library picks).

Each stage trains exactly --epochs epochs with no validation pass on both
sides (mml-bench's constant validation score, torch_reference.py
--timing-epochs). Stages: shared (MoE-MLoRA's stage 1, the same computation
as the base variant), mlora (the joint stage), experts (stage 2), gate
(stage 3). Rows/s: rows over the training loop's time, median over the
stage's epochs (stage 2: over every expert's epochs). Peak RSS: the peak of
the process that ran the stage, so far: one process for MLoRA and one for
MoE-MLoRA on each side.

Runs go one at a time, C then PyTorch in odd rounds, PyTorch then C in even
ones, so the two never compete for the cores and drift hits both alike. Each
figure is the median over --rounds; the ratio is the median of the rounds'
ratios. The machine should be idle: the table carries a warning when the load
average exceeded the core count while runs were starting.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = ("shared", "mlora", "experts", "gate")
# torch_reference.py's stage names, per variant
TORCH_STAGES = {"mlora": {"joint": "mlora"},
                "moe": {"backbone": "shared", "experts": "experts", "gate": "gate"}}


def log(msg):
    print(msg, file=sys.stderr)
    sys.stderr.flush()


def run(cmd, env, load_warnings):
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        load_warnings.append(load)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit("failed (%d): %s" % (p.returncode, " ".join(cmd)))
    return p.stdout, time.perf_counter() - t0


def write_splits(args, env, configs):
    """Writes WORK/splits/<config>/{train,val,test}.csv; returns {config: embed_dim}."""
    out_dir = os.path.join(args.work, "splits")
    os.makedirs(out_dir, exist_ok=True)
    dims = {}
    for cfg in configs:
        out = subprocess.run([args.bench, "train", "--config", cfg, "--data", args.data,
                              "--write-splits", out_dir], env=env, check=True,
                             capture_output=True, text=True).stdout
        log(out.strip())
        # "... rows, D domains, embedding K"
        dims[cfg] = int(out.strip().rsplit(" ", 1)[1])
    return out_dir, dims


def c_run(args, env, cfg, backbone, path, warn):
    cmd = [args.bench, "train", "--config", cfg, "--backbone", backbone, "--epochs",
           str(args.epochs), "--threads", str(args.threads), "--sections", "stages",
           "--data", args.data, "--json", path]
    _, sec = run(cmd, env, warn)
    with open(path) as f:
        doc = json.load(f)
    res = {}
    for s in doc["stages"]:
        res[s["stage"]] = {"rows_per_s": s["rows_per_s"], "peak_rss_mb": s["peak_rss_mb"]}
    return res, sec


def torch_run(args, env, cfg, backbone, split_dir, embed_dim, path_prefix, warn):
    d = os.path.join(split_dir, cfg)
    res, total = {}, 0.0
    for variant in ("mlora", "moe"):
        path = "%s-%s.json" % (path_prefix, variant)
        cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_reference.py"),
               "--train", os.path.join(d, "train.csv"), "--val", os.path.join(d, "val.csv"),
               "--test", os.path.join(d, "test.csv"), "--backbone", backbone,
               "--variant", variant, "--seeds", "1", "--embed-dim", str(embed_dim),
               "--timing-epochs", str(args.epochs), "--threads", str(args.threads),
               "--quiet", "--json", path]
        _, sec = run(cmd, env, warn)
        total += sec
        with open(path) as f:
            doc = json.load(f)
        for s in doc["stages"]:
            res[TORCH_STAGES[variant][s["name"]]] = {"rows_per_s": s["train_rows_per_s"],
                                                     "peak_rss_mb": s["peak_rss_mb"]}
    return res, total


def fmt_int(x):
    return format(int(round(x)), ",")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="all", choices=("ml100k", "large", "all"))
    ap.add_argument("--backbone", default="mlp,deepfm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default="build/bench/mml-bench")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"),
                    help="the folder holding ml-100k/")
    ap.add_argument("--work", default="/tmp/mml-train-compare")
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.epochs < 1 or args.threads < 1:
        ap.error("--rounds, --epochs and --threads must be >= 1")
    configs = ("ml100k", "large") if args.config == "all" else (args.config,)
    backbones = [b for b in args.backbone.split(",") if b]
    for b in backbones:
        if b not in ("mlp", "deepfm"):
            ap.error("torch_reference.py implements mlp and deepfm only")

    # Debian's PyTorch multiplies through libblas.so.3, which is BLIS here:
    # without BLIS_ARCH_TYPE it would run BLIS's generic kernels.
    env = dict(os.environ)
    if "BLIS_ARCH_TYPE" not in env:
        line = subprocess.run([args.bench, "--print-blis-arch"], check=True, capture_output=True,
                              text=True).stdout.split()
        env["BLIS_ARCH_TYPE"] = line[1].split("=", 1)[1]
    log("BLIS_ARCH_TYPE=%s for both sides" % env["BLIS_ARCH_TYPE"])
    split_dir, dims = write_splits(args, env, configs)
    runs_dir = os.path.join(args.work, "runs")
    os.makedirs(runs_dir, exist_ok=True)

    warn = []
    got = {}  # (cfg, backbone, stage, side) -> [result per round]
    for rnd in range(args.rounds):
        for cfg in configs:
            for bb in backbones:
                sides = ("c", "pytorch") if rnd % 2 == 0 else ("pytorch", "c")
                for side in sides:
                    prefix = os.path.join(runs_dir, "r%d-%s-%s-%s" % (rnd + 1, side, cfg, bb))
                    if side == "c":
                        res, sec = c_run(args, env, cfg, bb, prefix + ".json", warn)
                    else:
                        res, sec = torch_run(args, env, cfg, bb, split_dir, dims[cfg], prefix,
                                             warn)
                    for stage, r in res.items():
                        got.setdefault((cfg, bb, stage, side), []).append(r)
                    log("round %d: %s %s %s done (%.0f s)" % (rnd + 1, cfg, bb, side, sec))

    lines = ["| config | backbone | stage | C rows/s | PyTorch rows/s | C / PyTorch "
             "| C peak RSS (MB) | PyTorch peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    for cfg in configs:
        for bb in backbones:
            for stage in STAGES:
                c, t = got.get((cfg, bb, stage, "c")), got.get((cfg, bb, stage, "pytorch"))
                if not c or not t:
                    continue
                ratio = statistics.median(a["rows_per_s"] / b["rows_per_s"] for a, b in zip(c, t))
                lines.append("| %s | %s | %s | %s | %s | %.2fx | %.0f | %.0f |" % (
                    cfg, bb, stage, fmt_int(med(c, "rows_per_s")), fmt_int(med(t, "rows_per_s")),
                    ratio, med(c, "peak_rss_mb"), med(t, "peak_rss_mb")))
    notes = ["", "%d round(s), %d epoch(s) a stage, %d threads, BLIS_ARCH_TYPE=%s; medians over "
             "rounds (ratio: median of the rounds' ratios)." % (
                 args.rounds, args.epochs, args.threads, env["BLIS_ARCH_TYPE"])]
    if warn:
        notes.append("WARNING: the load average exceeded the core count when %d of the runs "
                     "started (up to %.1f): the machine was not idle, the figures are only "
                     "indicative." % (len(warn), max(warn)))
    table = "\n".join(lines + notes)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
