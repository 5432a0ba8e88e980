#!/usr/bin/python3
"""Side-by-side comparison of mml-train (C) and bench/torch_reference.py.

For each MovieLens domain split (gender, age, occupation) this writes the
PROTOCOL split once, trains every variant and seed with both implementations
on exactly those rows, one process at a time, and prints a table of test WAUC
(mean +- sample std over seeds), mean AUC, log loss, training rows/s and wall
time, with the C/PyTorch training-speed ratio. Standard library only.

Splits and per-run JSON/log files go to --work (default /tmp/mml-compare),
never into the repository: MovieLens may not be redistributed.
See bench/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_SCRIPT = os.path.join(ROOT, "bench", "torch_reference.py")

# Test WAUC (mean, sample std over seeds 123-125) of the PyTorch reference,
# MLP backbone, as quoted in PROTOCOL.md and the issues; None = not quoted.
PROTOCOL_WAUC = {
    ("gender", "base"): (0.7849, 0.0012), ("gender", "mlora"): (0.7842, 0.0005),
    ("gender", "moe"): (0.7849, 0.0012),
    ("age", "base"): (0.7881, None), ("age", "mlora"): (0.7843, None), ("age", "moe"): (0.7878, None),
    ("occupation", "base"): (0.7845, None), ("occupation", "mlora"): (0.7826, None),
    ("occupation", "moe"): (0.7845, None),
}

AGE_BANDS = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]


def csv_list(s):
    return [v.strip() for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--domain-by", type=csv_list, default=["gender", "age", "occupation"])
    ap.add_argument("--variants", type=csv_list, default=["base", "mlora", "moe"])
    ap.add_argument("--seeds", type=csv_list, default=["123", "124", "125"])
    ap.add_argument("--data-seed", default="123",
                    help="seed of the train/val/test split, or 'run' to split anew with each "
                         "training seed (so the spread over seeds includes the split)")
    ap.add_argument("--build", help="meson build directory (default: <repo>/build)")
    ap.add_argument("--data", help="folder holding ml-100k/ (default: <repo>/../shared/data)")
    ap.add_argument("--work", default="/tmp/mml-compare", help="splits, JSON and logs go here")
    ap.add_argument("--out", help="also write the table as markdown to this file")
    ap.add_argument("--only", choices=("torch", "c"), help="run one side only")
    ap.add_argument("--python-splits", action="store_true",
                    help="write the splits with torch_reference.py instead of mml-train")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter with torch, numpy and sklearn (default: Debian's)")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--blis-arch", default="auto",
                    help="BLIS kernels for both sides: a name (skx, zen3, haswell, generic) or "
                         "auto, the fastest this CPU runs (asks mml-train)")
    ap.add_argument("--backbone", default="mlp", help="mlp or deepfm (passed to both sides)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse a run's JSON when it already exists in --work")
    args = ap.parse_args(argv)
    for d in args.domain_by:
        if d not in ("gender", "age", "occupation"):
            ap.error("--domain-by: unknown split %r" % d)
    for v in args.variants:
        if v not in ("base", "mlora", "moe"):
            ap.error("--variants: unknown variant %r" % v)
    for s in args.seeds + [args.threads] + ([] if args.data_seed == "run" else [args.data_seed]):
        if not s.isdigit():
            ap.error("seeds and --threads must be non-negative integers, got %r" % s)
    args.build = os.path.abspath(args.build) if args.build else os.path.join(ROOT, "build")
    data = os.path.abspath(args.data) if args.data else os.path.normpath(
        os.path.join(ROOT, "..", "shared", "data"))
    args.movielens = os.path.join(data, "ml-100k")
    args.mml_train = os.path.join(args.build, "examples", "mml-train")
    args.work = os.path.abspath(args.work)
    args.max_load = 0.0
    return args


def run_logged(cmd, log_path):
    """Runs cmd with stdout+stderr to log_path; returns (exit code, wall seconds)."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    return rc, time.perf_counter() - t0


def tail(path, n=15):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def domain_names(args, domain_by):
    if domain_by == "gender":
        return ["F", "M"]
    if domain_by == "age":
        return AGE_BANDS
    with open(os.path.join(args.movielens, "u.occupation"), encoding="latin-1") as f:
        return [line.strip() for line in f if line.strip()]


def split_tag(args, data_seed):
    # who wrote the split matters: C and Python splits differ row by row
    return "%s%s" % ("py" if args.python_splits else "c", data_seed)


def write_splits(args, domain_by, data_seed):
    out = os.path.join(args.work, "splits", "%s-%s" % (domain_by, split_tag(args, data_seed)))
    files = [os.path.join(out, n + ".csv") for n in ("train", "val", "test")]
    os.makedirs(out, exist_ok=True)
    if args.python_splits:
        cmd = [args.python, TORCH_SCRIPT, "--write-splits", out, "--movielens", args.movielens,
               "--domain-by", domain_by, "--data-seed", data_seed]
    else:
        cmd = [args.mml_train, "--movielens", args.movielens, "--domain-by", domain_by,
               "--data-seed", data_seed, "--write-splits", out]
    log = os.path.join(out, "write-splits.log")
    rc, _ = run_logged(cmd, log)
    if rc != 0 or not all(os.path.isfile(f) for f in files):
        raise RuntimeError("writing the %s splits failed (exit %d):\n%s" % (domain_by, rc, tail(log)))
    return files


def load_run(path):
    with open(path) as f:
        obj = json.load(f)
    return obj["runs"][0] if "runs" in obj else obj


def one_run(args, side, domain_by, variant, seed, data_seed, files):
    """Trains one (side, variant, seed) cell; returns its JSON plus wall time."""
    run_dir = os.path.join(args.work, "runs", domain_by)
    os.makedirs(run_dir, exist_ok=True)
    stem = os.path.join(run_dir, "%s-%s-%s-%s-split%s" % (side, args.backbone, variant, seed,
                                                          split_tag(args, data_seed)))
    out_json, wall_file = stem + ".json", stem + ".wall"
    if args.resume and os.path.isfile(out_json) and os.path.isfile(wall_file):
        with open(wall_file) as f:
            wall = float(f.read())
        return load_run(out_json), wall
    if os.path.exists(out_json):
        os.unlink(out_json)
    train, val, test = files
    common = ["--train", train, "--val", val, "--test", test, "--variant", variant,
              "--seeds", seed, "--threads", args.threads, "--json", out_json]
    if args.backbone != "mlp":
        common += ["--backbone", args.backbone]
    if side == "torch":
        cmd = [args.python, TORCH_SCRIPT] + common + [
            "--domain-names", ",".join(domain_names(args, domain_by))]
    else:
        cmd = [args.mml_train] + common
    print("  %-5s %-10s %-5s seed %s ..." % (side, domain_by, variant, seed), end=" ", flush=True)
    # other work on the machine ruins the speed figures (PyTorch's OpenMP
    # threads spin-wait and slow down many times over); remember it
    args.max_load = max(args.max_load, os.getloadavg()[0])
    rc, wall = run_logged(cmd, stem + ".log")
    if rc != 0 or not os.path.isfile(out_json):
        print("FAILED (exit %d), see %s.log" % (rc, stem))
        raise RuntimeError(tail(stem + ".log"))
    with open(wall_file, "w") as f:
        f.write("%.3f\n" % wall)
    run = load_run(out_json)
    print("WAUC %s  %.1f s" % (f4(run.get("wauc")), wall))
    return run, wall


# --------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------

def summarise(runs):
    """Per-cell aggregates over seeds; None when the side did not run."""
    if not runs:
        return None
    pick = lambda f: [f(r, w) for r, w in runs if f(r, w) is not None]
    waucs = pick(lambda r, w: r.get("wauc"))
    speed = pick(lambda r, w: (r.get("stages") or [{}])[0].get("train_rows_per_s"))
    return {
        "n": len(runs),
        "wauc": statistics.fmean(waucs) if waucs else None,
        "wauc_sd": statistics.stdev(waucs) if len(waucs) > 1 else None,
        "mean_auc": mean_or_none(pick(lambda r, w: r.get("mean_auc"))),
        "logloss": mean_or_none(pick(lambda r, w: r.get("logloss"))),
        "rows_s": mean_or_none(speed),
        "wall": mean_or_none([w for _, w in runs]),
    }


def mean_or_none(xs):
    return statistics.fmean(xs) if xs else None


def f4(x):
    return "-" if x is None else "%.4f" % x


def pm(mean, sd):
    if mean is None:
        return "-"
    return "%.4f" % mean if sd is None else "%.4f ± %.4f" % (mean, sd)


def table(results, args):
    head = ["split", "variant", "seeds", "WAUC C", "WAUC torch", "WAUC PROTOCOL",
            "mean AUC C", "mean AUC torch", "log loss C", "log loss torch",
            "train rows/s C", "train rows/s torch", "rows/s C/torch", "wall s C", "wall s torch"]
    rows = []
    for (domain_by, variant), sides in results.items():
        c, t = summarise(sides.get("c")), summarise(sides.get("torch"))
        g = lambda s, k: None if s is None else s[k]
        ref = PROTOCOL_WAUC.get((domain_by, variant)) if args.backbone == "mlp" else None
        ratio = (c["rows_s"] / t["rows_s"] if c and t and c["rows_s"] and t["rows_s"] else None)
        rows.append([
            domain_by, variant, str(max(g(c, "n") or 0, g(t, "n") or 0)),
            pm(g(c, "wauc"), g(c, "wauc_sd")), pm(g(t, "wauc"), g(t, "wauc_sd")),
            pm(*ref) if ref else "-",
            f4(g(c, "mean_auc")), f4(g(t, "mean_auc")), f4(g(c, "logloss")), f4(g(t, "logloss")),
            "-" if g(c, "rows_s") is None else "{:,.0f}".format(c["rows_s"]),
            "-" if g(t, "rows_s") is None else "{:,.0f}".format(t["rows_s"]),
            "-" if ratio is None else "%.2f" % ratio,
            "-" if g(c, "wall") is None else "%.1f" % c["wall"],
            "-" if g(t, "wall") is None else "%.1f" % t["wall"],
        ])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    note = ("\nML-100K, backbone %s, data seed %s, training seeds %s, %s threads, BLIS kernels %s "
            "(BLIS_ARCH_TYPE=%s) on both sides; WAUC mean ± sample std over seeds; rows/s = median epoch of the joint stage "
            "(MoE: stage 1), averaged over seeds; wall = whole process per run.\n"
            % (args.backbone, "= training seed" if args.data_seed == "run" else args.data_seed,
               ",".join(args.seeds), args.threads, args.blis_name, os.environ["BLIS_ARCH_TYPE"]))
    cores = os.cpu_count() or 1
    if args.max_load > cores + 0.5:
        note += ("\nWARNING: the 1-minute load average reached %.1f on %d cores during the runs: "
                 "other processes competed for the CPU, the speed and wall-time columns are "
                 "not reliable (the metrics are).\n" % (args.max_load, cores))
    return "\n".join(lines) + "\n" + note


def main(argv=None):
    args = parse_args(argv)
    sides = ["c", "torch"] if args.only is None else [args.only]
    need_c = "c" in sides or not args.python_splits
    if need_c and not os.access(args.mml_train, os.X_OK):
        sys.exit("%s not found: build it first (./scripts/build), or use --only torch "
                 "--python-splits" % args.mml_train)
    if not os.path.isfile(os.path.join(args.movielens, "u.data")):
        sys.exit("%s/u.data not found (use --data)" % args.movielens)
    if "torch" in sides or args.python_splits:
        probe = subprocess.run([args.python, "-c", "import torch, numpy, sklearn"],
                               capture_output=True)
        if probe.returncode != 0:
            sys.exit("%s cannot import torch, numpy and sklearn" % args.python)

    # Both sides link the same BLIS: give them the same kernels.
    if not os.access(args.mml_train, os.X_OK):
        sys.exit("%s is needed to resolve --blis-arch" % args.mml_train)
    env = dict(os.environ)
    env.pop("BLIS_ARCH_TYPE", None)
    probe = subprocess.run([args.mml_train, "--blis-arch", args.blis_arch, "--print-blis-arch"],
                           capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        sys.exit("--blis-arch %s: %s" % (args.blis_arch, probe.stderr.strip()))
    args.blis_name, setting = probe.stdout.split()
    os.environ["BLIS_ARCH_TYPE"] = setting.split("=", 1)[1]
    print("BLIS kernels on both sides: %s (%s)" % (args.blis_name, setting), flush=True)

    results, failures, splits = {}, 0, {}

    def get_splits(domain_by, data_seed):
        # written once per (split, data seed), shared by both sides
        if (domain_by, data_seed) not in splits:
            files = write_splits(args, domain_by, data_seed)
            print("%s: splits in %s" % (domain_by, os.path.dirname(files[0])), flush=True)
            splits[domain_by, data_seed] = files
        return splits[domain_by, data_seed]

    for domain_by in args.domain_by:
        for variant in args.variants:
            cell = results.setdefault((domain_by, variant), {})
            for seed in args.seeds:
                data_seed = seed if args.data_seed == "run" else args.data_seed
                try:
                    files = get_splits(domain_by, data_seed)
                except RuntimeError as e:
                    print(e, file=sys.stderr)
                    failures += 1
                    continue
                # one process at a time: the two sides never compete for cores
                for side in sides:
                    try:
                        cell.setdefault(side, []).append(
                            one_run(args, side, domain_by, variant, seed, data_seed, files))
                    except RuntimeError as e:
                        print(e, file=sys.stderr)
                        failures += 1

    text = table(results, args)
    print()
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
