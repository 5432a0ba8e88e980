"""The Python binding's test (meson test python_binding).

Usage: test_binding.py MML_PREDICT   with $MOEMLORA_LIBRARY naming the build
tree's libmoemlora.so. Trains a MoE-MLoRA model on numpy arrays, saves and
loads it, predicts from 2 threads, checks the answers against mml-predict's
(1e-6), trains from CSV files, and checks that errors arrive as exceptions
with the library's message. Exits 77 (skipped) without numpy.
"""

import os
import subprocess
import sys
import tempfile
import threading

try:
    import numpy as np
except ImportError:
    print("python_binding: numpy is not installed (python3-numpy): skipped")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moemlora as mml  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def raises(code, needle, fn):
    try:
        fn()
    except mml.Error as e:
        return e.code == code and needle in e.message, f"{e.code}: {e}"
    return False, "no exception"


def make_rows(n, seed):
    """Users x items with biases, and an item taste whose sign differs in domain 1."""
    rng = np.random.default_rng(seed)
    user, item, dom = rng.integers(0, 60, n), rng.integers(0, 30, n), rng.integers(0, 3, n)
    ub, ib, taste = rng.normal(0, 1.5, 60), rng.normal(0, 1.5, 30), rng.normal(0, 1.5, 30)
    z = ub[user] + ib[item] + np.where(dom == 1, -taste[item], taste[item])
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return np.stack([user, item, dom], axis=1).astype(np.int32), labels


def main():
    mml_predict = sys.argv[1]
    print("library", mml.library().mml_version_string().decode(), os.environ.get("MOEMLORA_LIBRARY"))
    tmp = tempfile.mkdtemp(prefix="mml-py-")
    ids, labels = make_rows(9000, 1)
    ctx = mml.Context(threads=2, seed=3)
    data = mml.Dataset.from_arrays(ids, labels, domain_field=2, field_names=["user", "item", "domain"],
                                   field_sizes=[60, 30, 3], context=ctx)
    check(len(data) == 9000 and data.n_domains == 3, "from_arrays: 9000 rows, 3 domains")
    check(np.array_equal(data.ids, ids) and np.array_equal(data.labels, labels),
          "the data set holds the arrays' values")
    train, val, test = data.split(seed=1)
    check(len(train) + len(val) + len(test) == 9000, "split keeps every row")

    trainer = mml.Trainer(train, val, variant="moe", max_epochs=10, lr=3e-3)
    trainer.run()
    result = trainer.evaluate(test)
    print("test WAUC %.4f, per domain %s" % (result["wauc"], ["%.4f" % a for a in result["auc"]]))
    check(result["wauc"] > 0.6, "the model learned (test WAUC > 0.6)")
    model = trainer.take_model()
    path = os.path.join(tmp, "model.mml")
    model.save(path)
    served = mml.Model.load(path)
    check(served.n_domains == 3, "the loaded model has 3 domains")

    test_ids, test_dom = test.ids, test.domain
    mine = served.predict(test_ids, test_dom)
    check(np.array_equal(mine, model.predict(test_ids, test_dom)),
          "the loaded model predicts exactly as the trained one")

    # Two threads, each with its own session (and context) on the shared model.
    out = [None, None]

    def serve(k):
        s = served.session()
        out[k] = np.concatenate([s.predict(test_ids[i:i + 100], test_dom[i:i + 100])
                                 for i in range(0, len(test_ids), 100)])

    threads = [threading.Thread(target=serve, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    check(all(o is not None and np.array_equal(o, mine) for o in out),
          "2 threads give the same probabilities as one, bit for bit")

    # mml-predict on the same rows, as raw CSV values.
    csv = os.path.join(tmp, "rows.csv")
    with open(csv, "w") as f:
        f.write("user,item,domain\n")
        for r in test_ids:
            f.write("%d,%d,%d\n" % tuple(r))
    res = subprocess.run([mml_predict, "--model", path, "--input", csv], capture_output=True,
                         text=True)
    check(res.returncode == 0, "mml-predict ran (%s)" % res.stderr.strip())
    theirs = np.array([float(x) for x in res.stdout.split()], dtype=np.float64)
    check(theirs.shape == mine.shape and np.max(np.abs(theirs - mine)) <= 1e-6,
          "mml-predict agrees to 1e-6 (max difference %.3g)"
          % (np.max(np.abs(theirs - mine)) if theirs.shape == mine.shape else float("nan")))

    # A bad row gets NaN and its status; the others are served.
    bad = test_ids[:3].copy()
    bad[1, 0] = 1000
    prob, status = served.session().predict(bad, test_dom[:3], with_status=True)
    check(np.isnan(prob[1]) and status[1] == -3 and status[0] == 0 and prob[0] == mine[0],
          "a row with an unknown id gets NaN and MML_ERANGE, the others are served")

    # Errors raise mml.Error with the library's message.
    ok, got = raises(-1, "row 2: label", lambda: mml.Dataset.from_arrays(
        ids[:4], np.array([0, 1, 0.5, 1], dtype=np.float32), domain_field=2))
    check(ok, "a label of 0.5 raises MML_EINVAL naming the row (%s)" % got)
    ok, got = raises(-11, "nowhere.mml", lambda: mml.Model.load(os.path.join(tmp, "nowhere.mml")))
    check(ok, "a missing model file raises MML_ENOTFOUND naming it (%s)" % got)
    ok, got = raises(-4, "", lambda: served.predict(ids[:2, :2], ids[:2, 2]))
    check(ok, "rows with 2 of the 3 fields raise MML_ESHAPE (%s)" % got)
    try:
        mml.Trainer(train, val, learning_rate=1)
        check(False, "an unknown option raises TypeError")
    except TypeError:
        check(True, "an unknown option raises TypeError")

    # Training from CSV files.
    for name, ds in (("train", train), ("val", val)):
        with open(os.path.join(tmp, name + ".csv"), "w") as f:
            f.write("user,item,domain,label\n")
            for r, y in zip(ds.ids, ds.labels):
                f.write("%d,%d,%d,%d\n" % (r[0], r[1], r[2], y))
    ctrain, cval, ctest = mml.Dataset.from_csv(os.path.join(tmp, "train.csv"),
                                               os.path.join(tmp, "val.csv"),
                                               fields=["user", "item"])
    check(ctest is None and len(ctrain) == len(train) and ctrain.n_domains == 3,
          "from_csv loads the same rows")
    base = mml.Trainer(ctrain, cval, variant="base", max_epochs=2).run().evaluate(cval)
    check(base["wauc"] > 0.5, "a model trained from CSV validates above chance (%.4f)"
          % base["wauc"])

    print("python_binding: %d failure(s)" % len(failures) if failures else "python_binding: all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
