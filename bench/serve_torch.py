#!/usr/bin/python3
"""PyTorch side of the serving benchmark: the ML-100K-shaped model of
`mml-bench serve` (bench/bench_serve.c: 3 fields of 943, 1682 and 2 ids, k = 8,
tower 256-128-64, 2 domains; MoE: one expert per domain and the gate) with random weights,
timed as ../shared/docs/PROTOCOL.md says: batches of exactly 1024 rows
(forward + sigmoid, median of 5 passes after a warm-up) and single rows
(median of 2,000 calls after 200 warm-ups). Prints one JSON object per line.

Usage: /usr/bin/python3 bench/serve_torch.py [--backbone mlp,deepfm,autoint]
       [--variant base,moe] [--threads 2] [--rows 20480]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference  # noqa: E402

VOCAB = [943, 1682, 2]


def autoint_class(torch, CTRModel):
    nn = torch.nn

    class AutoIntModel(CTRModel):
        """CTRModel's tower plus AutoInt's interacting layers (METHOD.md):
        3 layers, 4 heads of width 8, residual, linear term."""

        def __init__(self, vocab, n_domains, n_experts, args, seed):
            super().__init__(vocab, n_domains, n_experts, args, seed)
            k, F = args.embed_dim, len(vocab)
            self.heads, self.hd = 4, 8
            self.att = nn.ModuleList()
            d_in = k
            for _ in range(3):
                layer = nn.ModuleDict({n: nn.Linear(d_in, self.heads * self.hd, bias=False)
                                       for n in ("q", "k", "v", "res")})
                self.att.append(layer)
                d_in = self.heads * self.hd
            self.first = nn.Embedding(sum(vocab), 1)
            nn.init.normal_(self.first.weight, 0.0, 0.01)
            self.head = nn.Linear(F * d_in + args.hidden[-1], 1)

        def forward(self, X, dom, mode="none", expert=None):
            e = self.emb(X + self.offsets)
            x = e.flatten(1)
            g = None
            if mode == "gate":
                g = self.gate_table()[dom]
            for l, lin in enumerate(self.layers):
                z = self.drop(lin(x))
                if g is not None:
                    r = self.ranks[l]
                    A = torch.cat([ex.A[l] for ex in self.experts], 1)
                    B = torch.cat([ex.B[l] for ex in self.experts], 0)
                    C = torch.stack([ex.c[l] for ex in self.experts], 0)
                    z = z + ((x @ A) * g.repeat_interleave(r, dim=1)) @ B + g @ C
                x = torch.relu(z)
            h = e
            n, F = h.shape[0], h.shape[1]
            for layer in self.att:
                q = layer["q"](h).view(n, F, self.heads, self.hd).transpose(1, 2)
                kk = layer["k"](h).view(n, F, self.heads, self.hd).transpose(1, 2)
                v = layer["v"](h).view(n, F, self.heads, self.hd).transpose(1, 2)
                a = torch.softmax(q @ kk.transpose(2, 3), dim=3) @ v
                h = torch.relu(a.transpose(1, 2).reshape(n, F, -1) + layer["res"](h))
            logit = self.head(torch.cat([h.flatten(1), x], 1)).squeeze(1)
            return logit + self.first(X + self.offsets).sum((1, 2))

    return AutoIntModel


def measure(torch, model, X, dom, mode, rows):
    model.eval()
    n_full = rows // 1024
    with torch.no_grad():
        def one_pass():
            t0 = time.perf_counter()
            for b in range(n_full):
                s = b * 1024
                torch.sigmoid(model(X[s:s + 1024], dom[s:s + 1024], mode))
            return n_full * 1024 / (time.perf_counter() - t0)
        one_pass()
        passes = [one_pass() for _ in range(5)]
        x1, d1 = X[:1], dom[:1]
        lat = []
        for i in range(2200):
            t0 = time.perf_counter()
            torch.sigmoid(model(x1, d1, mode))
            if i >= 200:
                lat.append(time.perf_counter() - t0)
    return statistics.median(passes), statistics.median(lat) * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="mlp,deepfm,autoint")
    ap.add_argument("--variant", default="base,moe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=20480)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    CTRModel = torch_reference.build_model_classes(torch)
    AutoInt = autoint_class(torch, CTRModel)
    rng = np.random.default_rng(7)
    X = torch.tensor(np.stack([rng.integers(0, v, args.rows) for v in VOCAB], 1), dtype=torch.int64)
    dom = X[:, 2].clone()
    for backbone in args.backbone.split(","):
        for variant in args.variant.split(","):
            margs = argparse.Namespace(embed_dim=8, hidden=[256, 128, 64], dropout=0.5, alpha=16,
                                       backbone=backbone)
            E = 2 if variant == "moe" else 0
            cls = AutoInt if backbone == "autoint" else CTRModel
            model = cls(VOCAB, 2, E, margs, 7)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
            rps, lat = measure(torch, model, X, dom, "gate" if E else "none", args.rows)
            print(json.dumps({"side": "pytorch", "backbone": backbone, "variant": variant,
                              "threads": args.threads, "batch_rows_per_s": rps, "latency_us": lat}))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
