#!/usr/bin/python3
"""PyTorch implementation of the reference protocol (../shared/docs/PROTOCOL.md).

Trains and evaluates the shared model ("base"), MLoRA and MoE-MLoRA on split
files written by `mml-train --write-splits` (or by --write-splits below), so
the C library can be compared with an independent implementation on the very
same rows.

Split CSV format: header `label,domain,<field>...`, all values integers, ids
0-based. The domain column is also a categorical field of the model, placed
after the others (fields = [user, item, domain] for MovieLens).

Timing mode (--timing-epochs N, used by bench/train_compare.py): every stage
(and every expert) trains exactly N epochs, with no validation pass (the score
is a constant, so nothing stops early), and no test evaluation or inference
timing afterwards; the JSON keeps the stages' training rows/s and peak RSS.

Run with Debian's /usr/bin/python3 (python3-torch 1.13, numpy, sklearn).
See bench/README.md.
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np

VARIANTS = ("base", "mlora", "moe")


# --------------------------------------------------------------------------
# MovieLens splits (only numpy needed; used by compare.py --python-splits)
# --------------------------------------------------------------------------

AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


def _age_band(age):
    for i, upper in enumerate((18, 25, 35, 45, 50, 56)):
        if age < upper:
            return i
    return 6


def _round_half_up(x):
    # Python's round() rounds halves to even; the protocol means plain rounding.
    return int(math.floor(x + 0.5))


def domain_names(ml_dir, domain_by):
    """Human-readable names of the domains, in id order."""
    if domain_by == "gender":
        return ["F", "M"]
    if domain_by == "age":
        return list(AGE_BANDS)
    with open(os.path.join(ml_dir, "u.occupation"), encoding="latin-1") as f:
        return [line.strip() for line in f if line.strip()]


def write_movielens_splits(ml_dir, domain_by, data_seed, out_dir, label_min=5):
    """The PROTOCOL split of ML-100K, written as train/val/test CSV files."""
    occupations = domain_names(ml_dir, "occupation")
    user_domain = {}
    with open(os.path.join(ml_dir, "u.user"), encoding="latin-1") as f:
        for line in f:
            if not line.strip():
                continue
            uid, age, gender, occ, _zip = line.rstrip("\n").split("|")
            if domain_by == "gender":
                d = {"F": 0, "M": 1}[gender]
            elif domain_by == "age":
                d = _age_band(int(age))
            elif domain_by == "occupation":
                d = occupations.index(occ)
            else:
                raise ValueError("unknown --domain-by %r" % domain_by)
            user_domain[int(uid)] = d

    raw = np.loadtxt(os.path.join(ml_dir, "u.data"), dtype=np.int64, ndmin=2)
    users, items, ratings = raw[:, 0], raw[:, 1], raw[:, 2]
    # 0-based contiguous ranks of the raw ids
    user_ix = np.searchsorted(np.unique(users), users)
    item_ix = np.searchsorted(np.unique(items), items)
    label = (ratings >= label_min).astype(np.int64)
    dom = np.array([user_domain[u] for u in users], dtype=np.int64)

    rng = np.random.default_rng(data_seed)
    parts = {"train": [], "val": [], "test": []}
    for d in range(int(dom.max()) + 1):
        for c in (0, 1):
            rows = np.flatnonzero((dom == d) & (label == c))
            rows = rows[rng.permutation(len(rows))]
            n_tr = _round_half_up(0.6 * len(rows))
            n_va = _round_half_up(0.2 * len(rows))
            parts["train"].append(rows[:n_tr])
            parts["val"].append(rows[n_tr:n_tr + n_va])
            parts["test"].append(rows[n_tr + n_va:])

    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for name in ("train", "val", "test"):
        rows = np.concatenate(parts[name])
        rows = rows[rng.permutation(len(rows))]
        table = np.stack([label[rows], dom[rows], user_ix[rows], item_ix[rows]], 1)
        path = os.path.join(out_dir, name + ".csv")
        np.savetxt(path, table, fmt="%d", delimiter=",",
                   header="label,domain,user,item", comments="")
        counts[name] = len(rows)
    return counts


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def read_split(path):
    with open(path) as f:
        header = f.readline().strip().split(",")
    if header[:2] != ["label", "domain"] or len(header) < 3:
        raise SystemExit("%s: header must be label,domain,<fields...>" % path)
    table = np.loadtxt(path, dtype=np.int64, delimiter=",", skiprows=1, ndmin=2)
    return header, table


class Split:
    """One split as tensors; X holds the fields with the domain appended last."""

    def __init__(self, table, torch):
        self.y = torch.from_numpy(table[:, 0].astype(np.float32))
        self.dom = torch.from_numpy(table[:, 1].copy())
        self.X = torch.from_numpy(np.concatenate([table[:, 2:], table[:, 1:2]], 1))
        self.n = len(table)


def load_data(args, torch):
    headers, tables = [], []
    for path in (args.train, args.val, args.test):
        h, t = read_split(path)
        headers.append(h)
        tables.append(t)
    if headers[1] != headers[0] or headers[2] != headers[0]:
        raise SystemExit("train/val/test headers differ")
    both = np.concatenate(tables)
    if both.min() < 0 or not set(np.unique(both[:, 0])) <= {0, 1}:
        raise SystemExit("labels must be 0/1 and ids non-negative")
    fields = headers[0][2:] + ["domain"]
    cols = np.concatenate([both[:, 2:], both[:, 1:2]], 1)
    vocab = [int(v) + 1 for v in cols.max(0)]
    n_domains = int(both[:, 1].max()) + 1
    splits = [Split(t, torch) for t in tables]
    return fields, vocab, n_domains, splits


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def build_model_classes(torch):
    nn = torch.nn
    F = torch.nn.functional

    def glorot_(t, generator=None):
        # t is (fan_in, fan_out) for our own matrices
        bound = math.sqrt(6.0 / (t.shape[0] + t.shape[1]))
        with torch.no_grad():
            return t.uniform_(-bound, bound, generator=generator)

    class Expert(nn.Module):
        """One set of per-layer adapters (A, B, c) with the MLoRA shapes."""

        def __init__(self, dims, ranks, generator):
            super().__init__()
            self.A = nn.ParameterList()
            self.B = nn.ParameterList()
            self.c = nn.ParameterList()
            for (d_in, d_out), r in zip(dims, ranks):
                self.A.append(nn.Parameter(glorot_(torch.empty(d_in, r), generator)))
                self.B.append(nn.Parameter(torch.zeros(r, d_out)))
                self.c.append(nn.Parameter(torch.zeros(d_out)))

    class CTRModel(nn.Module):
        def __init__(self, vocab, n_domains, n_experts, args, seed):
            super().__init__()
            k = args.embed_dim
            self.n_fields = len(vocab)
            self.D = n_domains
            self.E = n_experts
            self.deepfm = args.backbone == "deepfm"
            self.register_buffer("offsets", torch.tensor(np.cumsum([0] + vocab[:-1]), dtype=torch.int64))
            # Backbone init draws from the global RNG (seeded by the caller);
            # experts and gate use their own generators, so base, MLoRA and
            # MoE stage 1 start from the same backbone and see the same
            # dropout masks for a given seed.
            self.emb = nn.Embedding(sum(vocab), k)
            nn.init.normal_(self.emb.weight, 0.0, 0.01)
            if self.deepfm:
                self.first = nn.Embedding(sum(vocab), 1)
                nn.init.zeros_(self.first.weight)
            widths = [k * self.n_fields] + list(args.hidden)
            self.dims = list(zip(widths[:-1], widths[1:]))
            self.layers = nn.ModuleList()
            for d_in, d_out in self.dims:
                lin = nn.Linear(d_in, d_out)
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
                self.layers.append(lin)
            self.drop = nn.Dropout(args.dropout)
            self.out = nn.Linear(widths[-1], 1)
            nn.init.xavier_uniform_(self.out.weight)
            nn.init.zeros_(self.out.bias)

            self.ranks = [min(max(d_out // args.alpha, 1), d_in, d_out) for d_in, d_out in self.dims]
            self.experts = nn.ModuleList()
            for i in range(n_experts):
                g = torch.Generator().manual_seed(derive_seed(seed, 1, i))
                self.experts.append(Expert(self.dims, self.ranks, g))
            if n_experts:
                g = torch.Generator().manual_seed(derive_seed(seed, 2, 0))
                self.gate_emb = nn.Parameter(torch.empty(n_domains, 4).uniform_(-0.05, 0.05, generator=g))
                self.gate_w = nn.Parameter(glorot_(torch.empty(4, n_experts), g))
                self.gate_b = nn.Parameter(torch.zeros(n_experts))
                # own-experts table: weight 1/m on the experts of each domain
                own = torch.zeros(n_domains, n_experts)
                for i in range(n_experts):
                    own[i % n_domains, i] = 1.0
                self.register_buffer("own", own / own.sum(1, keepdim=True))

        def backbone_params(self):
            ps = [self.emb.weight] + [p for l in self.layers for p in l.parameters()]
            ps += list(self.out.parameters())
            if self.deepfm:
                ps.append(self.first.weight)
            return ps

        def gate_params(self):
            return [self.gate_emb, self.gate_w, self.gate_b]

        def gate_table(self):
            """The D x E mixture weights (the gate only sees the domain)."""
            return torch.softmax(self.gate_emb @ self.gate_w + self.gate_b, dim=1)

        def forward(self, X, dom, mode="none", expert=None):
            """mode: none (no adapters), onehot (MLoRA), gate (MoE), own
            (1/m on the domain's own experts), expert (expert `expert` only)."""
            e = self.emb(X + self.offsets)          # N x F x k
            x = e.flatten(1)
            g = None
            if mode == "onehot":
                g = F.one_hot(dom, self.E).to(x.dtype)
            elif mode == "gate":
                g = self.gate_table()[dom]
            elif mode == "own":
                g = self.own[dom]
            for l, lin in enumerate(self.layers):
                z = self.drop(lin(x))
                if g is not None:
                    # all experts at once: x [A_1..A_E], columns scaled by
                    # the row's gate weight, times [B_1; ..; B_E], plus g C
                    r = self.ranks[l]
                    A = torch.cat([ex.A[l] for ex in self.experts], 1)
                    B = torch.cat([ex.B[l] for ex in self.experts], 0)
                    C = torch.stack([ex.c[l] for ex in self.experts], 0)
                    z = z + ((x @ A) * g.repeat_interleave(r, dim=1)) @ B + g @ C
                elif mode == "expert":
                    ex = self.experts[expert]
                    z = z + (x @ ex.A[l]) @ ex.B[l] + ex.c[l]
                x = torch.relu(z)
            logit = self.out(x).squeeze(1)
            if self.deepfm:
                logit = logit + self.first(X + self.offsets).sum((1, 2))
                s = e.sum(1)
                logit = logit + 0.5 * (s * s - (e * e).sum(1)).sum(1)
            return logit

    return CTRModel


def derive_seed(seed, purpose, index):
    """Independent 63-bit seeds for the separate RNG streams of one run."""
    return int(np.random.SeedSequence([seed, purpose, index]).generate_state(1, np.uint64)[0]) >> 1


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------

def evaluate(torch, model, split, mode, rows=None, expert=None, chunk=8192):
    """Logits of `split` (or its `rows`) in eval mode."""
    X, dom = split.X, split.dom
    if rows is not None:
        X, dom = X[rows], dom[rows]
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(X), chunk):
            out.append(model(X[s:s + chunk], dom[s:s + chunk], mode, expert))
    return torch.cat(out) if out else torch.zeros(0)


def auc_or_none(y, score):
    from sklearn.metrics import roc_auc_score
    if len(y) == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, score))


def bce_from_logits(y, z):
    # mean of log(1+e^z) - y z, computed stably in float64
    z = z.astype(np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(y) else None


def split_metrics(split, logits, n_domains, names):
    y = split.y.numpy().astype(np.float64)
    dom = split.dom.numpy()
    z = logits.numpy()
    domains = []
    for d in range(n_domains):
        m = dom == d
        domains.append({"id": d, "name": names[d], "n_test": int(m.sum()),
                        "auc": auc_or_none(y[m], z[m]),
                        "logloss": bce_from_logits(y[m], z[m])})
    scored = [x for x in domains if x["auc"] is not None]
    mean_auc = statistics.fmean(x["auc"] for x in scored) if scored else None
    n = sum(x["n_test"] for x in scored)
    wauc = sum(x["n_test"] * x["auc"] for x in scored) / n if n else None
    return {"domains": domains, "mean_auc": mean_auc, "wauc": wauc,
            "logloss": bce_from_logits(y, z)}


def mean_domain_auc(split, logits, n_domains):
    y = split.y.numpy()
    dom = split.dom.numpy()
    z = logits.numpy()
    aucs = [auc_or_none(y[dom == d], z[dom == d]) for d in range(n_domains)]
    aucs = [a for a in aucs if a is not None]
    return statistics.fmean(aucs) if aucs else None


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def train_stage(torch, model, trainable, train, train_rows, validate, mode, args,
                shuffle_seed, expert=None):
    """One early-stopped stage over `trainable` (everything else frozen).

    validate() returns the validation score (None when undefined). Returns
    (epochs, best score, seconds, per-epoch training rows/s)."""
    trainable_ids = {id(p) for p in trainable}
    frozen = [p for p in model.parameters() if id(p) not in trainable_ids]
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable_ids)
    frozen_before = [p.detach().clone() for p in frozen]

    opt = torch.optim.Adam(trainable, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator().manual_seed(shuffle_seed)
    n = len(train_rows)
    best, best_state, bad, epochs, speeds = None, None, 0, 0, []
    t_stage = time.perf_counter()
    for epoch in range(1, args.max_epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = train_rows[torch.randperm(n, generator=gen)]
        for s in range(0, n, args.batch):
            b = perm[s:s + args.batch]
            logit = model(train.X[b], train.dom[b], mode, expert)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, train.y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        speeds.append(n / (time.perf_counter() - t0))
        epochs = epoch
        score = validate()
        if best_state is None or (score is not None and (best is None or score > best)):
            best = score
            best_state = [p.detach().clone() for p in trainable]
            bad = 0
        else:
            bad += 1
            if bad >= args.patience:
                break
    with torch.no_grad():
        for p, saved in zip(trainable, best_state):
            p.copy_(saved)
    seconds = time.perf_counter() - t_stage
    for p, before in zip(frozen, frozen_before):
        if not torch.equal(p, before):
            raise AssertionError("a frozen tensor changed during training")
    for p in model.parameters():
        p.requires_grad_(False)
    return epochs, best, seconds, speeds


def stage_record(name, epochs, best_val, seconds, speeds):
    # peak_rss_mb: the whole process's peak so far, at the stage's end
    return {"name": name, "epochs": epochs, "best_val": best_val, "seconds": seconds,
            "train_rows_per_s": statistics.median(speeds) if speeds else None,
            "peak_rss_mb": peak_rss_mb()}


def measure_speed(torch, model, test, mode):
    """Inference rows/s at batch 1024 and single-row latency (PROTOCOL Speed)."""
    model.eval()
    n_full = test.n // 1024
    passes = []
    with torch.no_grad():
        def one_pass():
            t0 = time.perf_counter()
            for b in range(n_full):
                s = b * 1024
                torch.sigmoid(model(test.X[s:s + 1024], test.dom[s:s + 1024], mode))
            return n_full * 1024 / (time.perf_counter() - t0)
        if n_full:
            one_pass()                                       # warm-up
            passes = [one_pass() for _ in range(5)]
        x1, d1 = test.X[:1], test.dom[:1]
        lat = []
        for i in range(2200):
            t0 = time.perf_counter()
            torch.sigmoid(model(x1, d1, mode))
            if i >= 200:
                lat.append(time.perf_counter() - t0)
    return {"infer_rows_per_s": statistics.median(passes) if passes else None,
            "latency_us": statistics.median(lat) * 1e6}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(torch, CTRModel, data, variant, seed, args, names):
    fields, vocab, D, (train, val, test) = data
    torch.manual_seed(seed)
    np.random.seed(seed)
    E = {"base": 0, "mlora": D, "moe": args.experts_per_domain * D}[variant]
    model = CTRModel(vocab, D, E, args, seed)
    all_train = torch.arange(train.n)
    result = {"backbone": args.backbone, "variant": variant, "seed": seed,
              "threads": args.threads}
    timing = args.timing_epochs is not None
    if timing:
        result["timing_epochs"] = args.timing_epochs
    val_all = lambda mode: (lambda: mean_domain_auc(val, evaluate(torch, model, val, mode), D))
    if timing:
        # no validation pass: a constant score, so every stage runs its epochs
        val_all = lambda mode: (lambda: 0.5)  # noqa: E731

    if variant in ("base", "mlora"):
        mode = "none" if variant == "base" else "onehot"
        trainable = model.backbone_params() + [p for ex in model.experts for p in ex.parameters()]
        ep, best, sec, sp = train_stage(torch, model, trainable, train, all_train,
                                        val_all(mode), mode, args, derive_seed(seed, 3, 0))
        result["stages"] = [stage_record("joint", ep, best, sec, sp)]
        final_mode = mode
    else:
        stages = []
        # stage 1: backbone alone, no experts in the forward pass
        ep, best, sec, sp = train_stage(torch, model, model.backbone_params(), train, all_train,
                                        val_all("none"), "none", args, derive_seed(seed, 3, 0))
        stages.append(stage_record("backbone", ep, best, sec, sp))
        if not timing:
            m = split_metrics(test, evaluate(torch, model, test, "none"), D, names)
            result["after_backbone"] = {"mean_auc": m["mean_auc"], "wauc": m["wauc"]}

        # stage 2: each expert alone on its own domain's rows
        experts, tot_ep, tot_sec, all_sp = [], 0, 0.0, []
        for i in range(E):
            d = i % D
            rows_tr = torch.nonzero(train.dom == d).squeeze(1)
            rows_va = torch.nonzero(val.dom == d).squeeze(1)
            y_va = val.y[rows_va].numpy()
            validate = (lambda i=i, rows_va=rows_va, y_va=y_va:
                        auc_or_none(y_va, evaluate(torch, model, val, "expert", rows_va, i).numpy()))
            if timing:
                validate = lambda: 0.5  # noqa: E731
            ep, best, sec, sp = train_stage(torch, model, list(model.experts[i].parameters()),
                                            train, rows_tr, validate, "expert", args,
                                            derive_seed(seed, 4, i), expert=i)
            experts.append({"id": i, "domain": d, "epochs": ep, "best_val": best})
            tot_ep += ep
            tot_sec += sec
            all_sp += sp
        vals = [x["best_val"] for x in experts if x["best_val"] is not None]
        stages.append(stage_record("experts", tot_ep, statistics.fmean(vals) if vals else None,
                                   tot_sec, all_sp))
        result["experts"] = experts
        if not timing:
            m = split_metrics(test, evaluate(torch, model, test, "own"), D, names)
            result["own_experts"] = {"mean_auc": m["mean_auc"], "wauc": m["wauc"]}

        # stage 3: the gate alone, full gated mixture on all domains
        with torch.no_grad():
            result["gate_init"] = model.gate_table().tolist()
        ep, best, sec, sp = train_stage(torch, model, model.gate_params(), train, all_train,
                                        val_all("gate"), "gate", args, derive_seed(seed, 5, 0))
        stages.append(stage_record("gate", ep, best, sec, sp))
        with torch.no_grad():
            result["gate"] = model.gate_table().tolist()
        result["stages"] = stages
        final_mode = "gate"

    if timing:
        result["speed"] = {"peak_rss_mb": peak_rss_mb()}
    else:
        result.update(split_metrics(test, evaluate(torch, model, test, final_mode), D, names))
        result["speed"] = measure_speed(torch, model, test, final_mode)
        result["speed"]["peak_rss_mb"] = peak_rss_mb()
    # keep the documented key order: metrics first, then stages and extras
    order = ["backbone", "variant", "seed", "threads", "timing_epochs", "domains", "mean_auc",
             "wauc", "logloss", "stages", "experts", "gate", "gate_init", "after_backbone",
             "own_experts", "speed"]
    return {k: result[k] for k in order if k in result}


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt(x, spec=".4f"):
    return "-" if x is None else format(x, spec)


def print_timing(r, out=sys.stdout):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p("== %s / %s  seed %d  threads %d  (timing: %d epochs a stage)"
      % (r["backbone"], r["variant"], r["seed"], r["threads"], r["timing_epochs"]))
    for s in r["stages"]:
        p("  stage %-8s epochs %3d  %7.1f s  train %s rows/s  peak RSS %.0f MB"
          % (s["name"], s["epochs"], s["seconds"], fmt(s["train_rows_per_s"], ",.0f"),
             s["peak_rss_mb"]))


def print_run(r, out=sys.stdout):
    if "timing_epochs" in r:
        return print_timing(r, out)
    p = lambda *a: print(*a, file=out)
    p("== %s / %s  seed %d  threads %d" % (r["backbone"], r["variant"], r["seed"], r["threads"]))
    p("  %-4s %-14s %7s %8s %8s" % ("id", "domain", "n_test", "AUC", "logloss"))
    for d in r["domains"]:
        p("  %-4d %-14s %7d %8s %8s" % (d["id"], d["name"][:14], d["n_test"], fmt(d["auc"]),
                                         fmt(d["logloss"])))
    p("  mean AUC %s   WAUC %s   log loss %s" % (fmt(r["mean_auc"]), fmt(r["wauc"]),
                                                  fmt(r["logloss"])))
    for s in r["stages"]:
        p("  stage %-8s epochs %3d  best val %s  %7.1f s  train %s rows/s"
          % (s["name"], s["epochs"], fmt(s["best_val"]), s["seconds"],
             fmt(s["train_rows_per_s"], ",.0f")))
    if "after_backbone" in r:
        p("  after backbone: mean AUC %s  WAUC %s" % (fmt(r["after_backbone"]["mean_auc"]),
                                                       fmt(r["after_backbone"]["wauc"])))
        p("  own experts:    mean AUC %s  WAUC %s" % (fmt(r["own_experts"]["mean_auc"]),
                                                       fmt(r["own_experts"]["wauc"])))
        p("  learned gate (rows: domains, columns: experts):")
        for row in r["gate"]:
            p("    " + " ".join("%.3f" % v for v in row))
    s = r["speed"]
    p("  inference %s rows/s (batch 1024)  latency %.1f us  peak RSS %.0f MB"
      % (fmt(s["infer_rows_per_s"], ",.0f"), s["latency_us"], s["peak_rss_mb"]))


def write_json(path, obj):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def int_list(s):
    return [int(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_argument_group("training")
    g.add_argument("--train")
    g.add_argument("--val")
    g.add_argument("--test")
    g.add_argument("--backbone", choices=("mlp", "deepfm"), default="mlp")
    g.add_argument("--variant", choices=VARIANTS + ("all",), default="all")
    g.add_argument("--seeds", type=int_list, default=[123, 124, 125])
    g.add_argument("--embed-dim", type=int, default=8)
    g.add_argument("--hidden", type=int_list, default=[256, 128, 64])
    g.add_argument("--dropout", type=float, default=0.5)
    g.add_argument("--alpha", type=int, default=16)
    g.add_argument("--experts-per-domain", type=int, default=1)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch", type=int, default=1024)
    g.add_argument("--patience", type=int, default=3)
    g.add_argument("--max-epochs", type=int, default=50)
    g.add_argument("--timing-epochs", type=int, metavar="N",
                   help="timing mode: exactly N epochs a stage (and expert), no validation, "
                        "no test evaluation")
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--json", help="write the results here (one run: an object; several: {runs: [...]})")
    g.add_argument("--domain-names", help="comma-separated names, in domain id order")
    g.add_argument("--quiet", action="store_true", help="no table on stdout")
    s = ap.add_argument_group("split writing (no training)")
    s.add_argument("--write-splits", metavar="OUTDIR",
                   help="write the PROTOCOL split of --movielens to OUTDIR/{train,val,test}.csv and exit")
    s.add_argument("--movielens", metavar="DIR", help="ML-100K folder (u.data, u.user, u.occupation)")
    s.add_argument("--domain-by", choices=("gender", "age", "occupation"), default="gender")
    s.add_argument("--data-seed", type=int, default=123)
    s.add_argument("--label-min", type=int, default=5, help="label = rating >= this")
    args = ap.parse_args(argv)
    if args.write_splits:
        if not args.movielens:
            ap.error("--write-splits needs --movielens")
    elif not (args.train and args.val and args.test):
        ap.error("--train, --val and --test are required")
    if args.alpha < 1 or args.experts_per_domain < 1 or args.batch < 1 or args.threads < 1:
        ap.error("--alpha, --experts-per-domain, --batch and --threads must be >= 1")
    if args.timing_epochs is not None:
        if args.timing_epochs < 1:
            ap.error("--timing-epochs must be >= 1")
        args.max_epochs = args.timing_epochs
        args.patience = args.timing_epochs + 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.write_splits:
        counts = write_movielens_splits(args.movielens, args.domain_by, args.data_seed,
                                        args.write_splits, args.label_min)
        print("wrote %s: train %d, val %d, test %d rows" % (args.write_splits, counts["train"],
                                                            counts["val"], counts["test"]))
        return 0

    import torch
    torch.set_num_threads(args.threads)
    CTRModel = build_model_classes(torch)
    data = load_data(args, torch)
    D = data[2]
    names = [str(d) for d in range(D)]
    if args.domain_names:
        given = [s.strip() for s in args.domain_names.split(",")]
        if len(given) != D:
            raise SystemExit("--domain-names has %d names for %d domains" % (len(given), D))
        names = given

    variants = VARIANTS if args.variant == "all" else (args.variant,)
    runs = []
    for variant in variants:
        for seed in args.seeds:
            r = run_one(torch, CTRModel, data, variant, seed, args, names)
            runs.append(r)
            if not args.quiet:
                print_run(r)
                sys.stdout.flush()
    if args.json:
        write_json(args.json, runs[0] if len(runs) == 1 else {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
