#!/usr/bin/python3
"""Serving speed side by side: `mml-bench serve` (the library, sessions) and
bench/serve_torch.py (PyTorch, the same model) in one run, alternating,
as ratios.

Usage (from the repository root, after ./scripts/build):
  /usr/bin/python3 bench/serve_compare.py [--backbone mlp,deepfm,autoint]
      [--rounds 2] [--bench build/bench/mml-bench] [--out FILE.md]

Both sides use 2 threads: the library two sessions with one BLIS thread
each, PyTorch torch.set_num_threads(2); both on the best BLIS kernels of
the CPU (Debian's PyTorch multiplies through libblas.so.3, BLIS here, so the
script gives it the BLIS_ARCH_TYPE the library picks).
Each figure is the median over the rounds; the machine should be idle.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="mlp,deepfm,autoint")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bench", default="build/bench/mml-bench")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    # Debian's PyTorch multiplies through libblas.so.3, which is BLIS here:
    # without BLIS_ARCH_TYPE it would run BLIS's generic kernels.
    env = dict(os.environ)
    if "BLIS_ARCH_TYPE" not in env:
        line = subprocess.run([args.bench, "--print-blis-arch"], check=True, capture_output=True,
                              text=True).stdout.split()
        env["BLIS_ARCH_TYPE"] = line[1].split("=", 1)[1]
    print("BLIS_ARCH_TYPE=%s for PyTorch" % env["BLIS_ARCH_TYPE"], file=sys.stderr)
    runs = {}
    for rnd in range(args.rounds):
        for side, cmd in (("c", [args.bench, "serve", "--backbone", args.backbone, "--batches",
                                 str(args.batches), "--json"]),
                          ("pytorch", ["/usr/bin/python3", os.path.join(HERE, "serve_torch.py"),
                                       "--backbone", args.backbone])):
            for r in run_json(cmd, env):
                runs.setdefault((r["backbone"], r["variant"], side), []).append(r)
            print("round %d: %s done" % (rnd + 1, side), file=sys.stderr)
    med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
    lines = ["| backbone | variant | latency C (us) | latency PyTorch (us) | PyTorch / C "
             "| batch-1024 C (rows/s) | batch-1024 PyTorch (rows/s) | C / PyTorch |",
             "|---|---|---|---|---|---|---|---|"]
    for backbone in args.backbone.split(","):
        for variant in ("base", "moe"):
            c, t = runs.get((backbone, variant, "c")), runs.get((backbone, variant, "pytorch"))
            if not c or not t:
                continue
            lc, lt = med(c, "latency_us"), med(t, "latency_us")
            bc, bt = med(c, "batch_rows_per_s"), med(t, "batch_rows_per_s")
            lines.append("| %s | %s | %.2f | %.1f | %.1fx | %s | %s | %.2fx |" % (
                backbone, variant, lc, lt, lt / lc, format(int(bc), ","), format(int(bt), ","),
                bc / bt))
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
