"""Python binding of libmoemlora over ctypes and numpy.

    import moemlora as mml
    train, val, test = mml.Dataset.from_arrays(ids, labels, domain_field=2).split(seed=1)
    model = mml.train(train, val, variant="moe")
    model.save("model.mml")
    probs = mml.Model.load("model.mml").predict(test.ids, test.domain)

The shared library is found through $MOEMLORA_LIBRARY (a path), else as
libmoemlora.so.1 on the loader's path. Every failing call raises
mml.Error with the status code and the library's message.

Threads: a read-only model (Model.load, Trainer.take_model) may be shared by
threads; each thread predicts through its own Session (model.session()),
which has its own context. ctypes releases the GIL during library calls, so
sessions on different threads run in parallel.
"""

import ctypes as C
import os
import threading

import numpy as np

__all__ = ["Error", "Context", "Dataset", "Trainer", "Model", "Session", "train", "library"]

MIX_NONE, MIX_DOMAIN, MIX_GATED, MIX_SINGLE, MIX_OWN = 0, 1, 2, 3, 4
VARIANTS = {"base": 0, "mlora": 1, "moe": 2}
OPTIMIZERS = {"sgd": 0, "adam": 1, "lazy_adam": 2, "adagrad": 3}

_P = C.c_void_p
_i32, _u32, _i64, _u64, _f32, _f64 = C.c_int32, C.c_uint32, C.c_int64, C.c_uint64, C.c_float, C.c_double
_str = C.c_char_p


def _struct(name, fields):
    return type(name, (C.Structure,), {"_fields_": fields})


# The public structs, member for member as in include/moemlora/*.h. Each is
# initialised by its *_init_sized function with this size; the library
# accepts the sizes of every release, so these stay valid when it grows.
CtxOptions = _struct("CtxOptions", [
    ("struct_size", _u32), ("n_threads", _u32), ("seed", _u64), ("allocator", _P),
    ("log", _P), ("log_user", _P), ("log_level", _i32), ("reserved", _i32)])
Arrays = _struct("Arrays", [
    ("struct_size", _u32), ("n_fields", _i32), ("n_rows", _i64), ("ids", _P),
    ("ids_row_stride", _i64), ("field_sizes", _P), ("field_names", _P), ("domain", _P),
    ("labels", _P), ("n_domains", _i32), ("domain_field", _i32), ("domain_names", _P),
    ("n_dense", _i32), ("reserved", _i32), ("dense", _P), ("dense_row_stride", _i64),
    ("dense_names", _P)])
CsvOptions = _struct("CsvOptions", [
    ("struct_size", _u32), ("n_field_columns", _i32), ("label_column", _str),
    ("domain_column", _str), ("field_columns", _P), ("numeric_columns", _P),
    ("multihot_columns", _P), ("ignore_columns", _P), ("n_numeric_columns", _i32),
    ("n_multihot_columns", _i32), ("n_ignore_columns", _i32), ("skip_bad_rows", _i32),
    ("domain_as_field", _i32), ("multihot_separator", C.c_char), ("delimiter", C.c_char),
    ("reserved", C.c_char * 2), ("max_line_bytes", _i64), ("hashed_columns", _P),
    ("hashed_buckets", _P), ("n_hashed_columns", _i32), ("reserved2", _i32),
    ("hash_seed", _u64)])
TrainerOptions = _struct("TrainerOptions", [
    ("struct_size", _u32), ("variant", _i32), ("backbone", _str), ("backbone_options", _P),
    ("experts_per_domain", _i32), ("alpha", _i32), ("embed_dim", _i32), ("n_hidden", _i32),
    ("hidden", _P), ("dropout", _f32), ("lr", _f32), ("batch_size", _i64), ("patience", _i32),
    ("max_epochs", _i32), ("progress", _P), ("progress_user", _P), ("validate", _P),
    ("validate_user", _P), ("optimizer", _i32), ("gate_top_k", _i32), ("l2_embedding", _f32),
    ("l2_dense", _f32), ("init_model", _P), ("first_stage", _i32), ("reserved", _i32),
    ("checkpoint", _P), ("checkpoint_user", _P)])
BatchView = _struct("BatchView", [
    ("struct_size", _u32), ("n_fields", _i32), ("n_dense", _i32), ("n_multihot", _i32),
    ("n_rows", _i64), ("ids", _P), ("ids_row_stride", _i64), ("dense", _P),
    ("dense_row_stride", _i64), ("domain", _P), ("labels", _P), ("weights", _P),
    ("multihot_offsets", _P), ("multihot_ids", _P)])
SessionOptions = _struct("SessionOptions", [
    ("struct_size", _u32), ("mix_mode", _i32), ("max_rows", _i64),
    ("max_multihot_ids", _i64), ("reserved", _i64)])
MetricsSummary = _struct("MetricsSummary", [
    ("struct_size", _u32), ("n_domains_with_auc", _i32), ("gauc_defined", _i32),
    ("auc_defined", _i32), ("n", _i64), ("logloss", _f64), ("mean_auc", _f64), ("wauc", _f64),
    ("gauc", _f64), ("auc", _f64)])
DomainMetrics = _struct("DomainMetrics", [
    ("struct_size", _u32), ("auc_defined", _i32), ("n", _i64), ("n_positive", _i64),
    ("auc", _f64), ("logloss", _f64)])

_SIGNATURES = {
    "mml_status_str": (_str, [C.c_int]),
    "mml_version_string": (_str, []),
    "mml_ctx_options_init_sized": (C.c_int, [_P, _u32]),
    "mml_ctx_create": (C.c_int, [_P, _P]),
    "mml_ctx_destroy": (None, [_P]),
    "mml_ctx_last_error": (_str, [_P]),
    "mml_arrays_init_sized": (C.c_int, [_P, _u32]),
    "mml_dataset_from_arrays": (C.c_int, [_P, _P, _P]),
    "mml_dataset_split": (C.c_int, [_P, _P, _u64, _P, _P, _P]),
    "mml_csv_options_init_sized": (C.c_int, [_P, _u32]),
    "mml_csv_load": (C.c_int, [_P, _P, _str, _str, _str, _P, _P, _P]),
    "mml_dataset_destroy": (None, [_P]),
    "mml_dataset_n_rows": (_i64, [_P]),
    "mml_dataset_n_fields": (_i32, [_P]),
    "mml_dataset_n_dense": (_i32, [_P]),
    "mml_dataset_n_domains": (_i32, [_P]),
    "mml_dataset_field_name": (_str, [_P, _i32]),
    "mml_dataset_domain_name": (_str, [_P, _i32]),
    "mml_dataset_view_sized": (C.c_int, [_P, _i64, _i64, _P, _u32]),
    "mml_trainer_options_init_sized": (C.c_int, [_P, _u32]),
    "mml_trainer_create": (C.c_int, [_P, _P, _P, _P, _P]),
    "mml_trainer_destroy": (None, [_P]),
    "mml_trainer_run": (C.c_int, [_P]),
    "mml_trainer_mix_mode": (_i32, [_P]),
    "mml_trainer_evaluate": (C.c_int, [_P, _P, _i32, _P]),
    "mml_trainer_take_model": (C.c_int, [_P, _P]),
    "mml_metrics_create": (C.c_int, [_P, _P, _i32]),
    "mml_metrics_destroy": (None, [_P]),
    "mml_metrics_compute_sized": (C.c_int, [_P, _P, _u32]),
    "mml_metrics_domain_sized": (C.c_int, [_P, _i32, _P, _u32]),
    "mml_model_destroy": (None, [_P]),
    "mml_model_save": (C.c_int, [_P, _str]),
    "mml_model_load": (C.c_int, [_P, _P, _str]),
    "mml_model_make_readonly": (C.c_int, [_P]),
    "mml_model_is_readonly": (_i32, [_P]),
    "mml_model_n_domains": (_i32, [_P]),
    "mml_model_n_fields": (_i32, [_P]),
    "mml_session_options_init_sized": (C.c_int, [_P, _u32]),
    "mml_session_create": (C.c_int, [_P, _P, _P, _P]),
    "mml_session_destroy": (None, [_P]),
    "mml_session_predict": (C.c_int, [_P, _P, _P, _P]),
}

_lib = None
_lib_lock = threading.Lock()


def library():
    """The loaded shared library ($MOEMLORA_LIBRARY, else libmoemlora.so.1)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = C.CDLL(os.environ.get("MOEMLORA_LIBRARY") or "libmoemlora.so.1")
            for name, (res, args) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            _lib = lib
    return _lib


class Error(Exception):
    """A failing library call: .code is the MML_E* status, .message the context's message."""

    def __init__(self, code, message):
        self.code, self.message = code, message
        status = library().mml_status_str(code).decode()
        super().__init__(f"{message} ({status}, {code})" if message else f"{status} ({code})")


def _check(rc, ctx):
    if rc < 0:
        msg = library().mml_ctx_last_error(ctx.handle) if ctx is not None else None
        raise Error(rc, msg.decode(errors="replace") if msg else "")
    return rc


def _init(struct_type, init_name):
    s = struct_type()
    rc = getattr(library(), init_name)(C.byref(s), C.sizeof(s))
    if rc < 0:
        raise Error(rc, f"{init_name}: this library does not know a {struct_type.__name__} "
                        f"of {C.sizeof(s)} bytes")
    return s


def _ptr(a):
    return None if a is None else a.ctypes.data_as(_P)


def _names(seq):
    if seq is None:
        return None, None
    arr = (_str * len(seq))(*[s.encode() for s in seq])
    return arr, C.cast(arr, _P)


class _Shared:
    """An object others depend on: they count themselves with _retain and
    _release, and close() takes effect after the last of them, whatever order
    the garbage collector finalizes them in."""

    _users, _closed = 0, False

    def _retain(self):
        self._users += 1
        return self

    def _release(self):
        self._users -= 1
        if self._closed and self._users == 0:
            self.close()


class Context(_Shared):
    """Allocator, threads, seed and last error (mml_ctx). One thread at a time."""

    def __init__(self, threads=1, seed=1):
        o = _init(CtxOptions, "mml_ctx_options_init_sized")
        o.n_threads, o.seed = threads, seed
        h = _P()
        rc = library().mml_ctx_create(C.byref(h), C.byref(o))
        if rc < 0:
            raise Error(rc, "mml_ctx_create failed")
        self.handle = h

    def close(self):
        self._closed = True
        if self.handle and self._users == 0:
            library().mml_ctx_destroy(self.handle)
            self.handle = None

    __del__ = close


class Dataset:
    """Rows held by the library (mml_dataset): from arrays, CSV files or a split."""

    def __init__(self, handle, ctx):
        self.handle, self.ctx = handle, ctx._retain()

    @classmethod
    def from_arrays(cls, ids, labels, domain=None, domain_field=-1, dense=None, field_sizes=None,
                    field_names=None, domain_names=None, dense_names=None, n_domains=0,
                    context=None):
        """ids: n x F integer ids; labels: n values 0/1; domain: n domain ids, or None to take
        them from column domain_field of ids; dense: n x J numeric values or None."""
        ctx = context or Context()
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.ndim != 2:
            raise ValueError("ids must be a 2-d array (rows x fields)")
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        a = _init(Arrays, "mml_arrays_init_sized")
        a.n_fields, a.n_rows, a.ids = ids.shape[1], ids.shape[0], _ptr(ids)
        a.labels, a.domain_field, a.n_domains = _ptr(labels), domain_field, n_domains
        keep = [ids, labels]
        if labels.shape != (ids.shape[0],):
            raise ValueError("labels must have one value per row")
        if domain is not None:
            domain = np.ascontiguousarray(domain, dtype=np.int32)
            if domain.shape != (ids.shape[0],):
                raise ValueError("domain must have one value per row")
            a.domain = _ptr(domain)
            keep.append(domain)
        if dense is not None:
            dense = np.ascontiguousarray(dense, dtype=np.float32)
            if dense.ndim != 2 or dense.shape[0] != ids.shape[0]:
                raise ValueError("dense must be a 2-d array with one row per row of ids")
            a.n_dense, a.dense = dense.shape[1], _ptr(dense)
            keep.append(dense)
        if field_sizes is not None:
            fs = np.ascontiguousarray(field_sizes, dtype=np.int64)
            a.field_sizes = _ptr(fs)
            keep.append(fs)
        for attr, names in (("field_names", field_names), ("domain_names", domain_names),
                            ("dense_names", dense_names)):
            arr, p = _names(names)
            setattr(a, attr, p)
            keep.append(arr)
        h = _P()
        _check(library().mml_dataset_from_arrays(ctx.handle, C.byref(a), C.byref(h)), ctx)
        return cls(h, ctx)

    @classmethod
    def from_csv(cls, train, val=None, test=None, fields=None, label="label", domain="domain",
                 numeric=None, context=None):
        """Loads delimited files with a header (mml_csv_load); returns (train, val, test)."""
        ctx = context or Context()
        o = _init(CsvOptions, "mml_csv_options_init_sized")
        o.label_column = label.encode()
        o.domain_column = domain.encode() if domain else None
        keep = []
        if fields is not None:
            arr, o.field_columns = _names(fields)
            o.n_field_columns = len(fields)
            keep.append(arr)
        if numeric is not None:
            arr, o.numeric_columns = _names(numeric)
            o.n_numeric_columns = len(numeric)
            keep.append(arr)
        hs = [_P(), _P(), _P()]
        paths = [p.encode() if p else None for p in (train, val, test)]
        _check(library().mml_csv_load(ctx.handle, C.byref(o), *paths,
                                      *[C.byref(h) for h in hs]), ctx)
        return tuple(cls(h, ctx) if h else None for h in hs)

    def split(self, seed=1):
        """60/20/20 per domain and label class (mml_dataset_split): (train, val, test)."""
        hs = [_P(), _P(), _P()]
        _check(library().mml_dataset_split(self.ctx.handle, self.handle, seed,
                                           *[C.byref(h) for h in hs]), self.ctx)
        return tuple(Dataset(h, self.ctx) for h in hs)

    def __len__(self):
        return library().mml_dataset_n_rows(self.handle)

    @property
    def n_domains(self):
        return library().mml_dataset_n_domains(self.handle)

    @property
    def field_names(self):
        lib = library()
        return [lib.mml_dataset_field_name(self.handle, f).decode()
                for f in range(lib.mml_dataset_n_fields(self.handle))]

    @property
    def domain_names(self):
        lib = library()
        return [lib.mml_dataset_domain_name(self.handle, d).decode()
                for d in range(self.n_domains)]

    def _view(self):
        v = BatchView()
        _check(library().mml_dataset_view_sized(self.handle, 0, len(self), C.byref(v),
                                                C.sizeof(v)), self.ctx)
        return v

    def _copy(self, ptr, ctype, shape, stride=None):
        n = int(np.prod(shape)) if stride is None else shape[0] * stride
        if n == 0 or not ptr:
            return np.zeros(shape, dtype=ctype)
        a = np.ctypeslib.as_array(C.cast(ptr, C.POINTER(np.ctypeslib.as_ctypes_type(ctype))),
                                  (n,))
        a = a.reshape(shape[0], stride)[:, :shape[1]] if stride is not None else a.reshape(shape)
        return np.array(a, copy=True)

    @property
    def ids(self):
        v = self._view()
        return self._copy(v.ids, np.int32, (v.n_rows, v.n_fields), v.ids_row_stride)

    @property
    def domain(self):
        v = self._view()
        return self._copy(v.domain, np.int32, (v.n_rows,))

    @property
    def labels(self):
        v = self._view()
        return self._copy(v.labels, np.float32, (v.n_rows,))

    @property
    def dense(self):
        v = self._view()
        return self._copy(v.dense, np.float32, (v.n_rows, v.n_dense), v.dense_row_stride or 1)

    def close(self):
        if self.handle:
            library().mml_dataset_destroy(self.handle)
            self.handle = None
            self.ctx._release()

    __del__ = close


class Trainer:
    """The staged trainer (mml_trainer). Keyword options are mml_trainer_options' fields:
    variant ("base", "mlora", "moe"), backbone, lr, batch_size, patience, max_epochs,
    experts_per_domain, alpha, embed_dim, dropout, optimizer ("adam", ...), hidden (widths)."""

    def __init__(self, train, val, **options):
        self.ctx, self.train_set, self.val_set = train.ctx, train, val
        o = _init(TrainerOptions, "mml_trainer_options_init_sized")
        self._keep = []
        for key, value in options.items():
            if key == "variant":
                value = VARIANTS[value] if isinstance(value, str) else value
            elif key == "optimizer":
                value = OPTIMIZERS[value] if isinstance(value, str) else value
            elif key == "backbone":
                value = value.encode()
                self._keep.append(value)
            elif key == "hidden":
                arr = (_i32 * len(value))(*value)
                self._keep.append(arr)
                o.n_hidden, value = len(value), C.cast(arr, _P)
            if key not in dict(TrainerOptions._fields_) or key in ("struct_size", "reserved"):
                raise TypeError(f"unknown trainer option '{key}'")
            setattr(o, key, value)
        h = _P()
        _check(library().mml_trainer_create(C.byref(h), self.ctx.handle, C.byref(o),
                                            train.handle, val.handle), self.ctx)
        self.handle = h
        self.ctx._retain()

    def run(self):
        _check(library().mml_trainer_run(self.handle), self.ctx)
        return self

    def evaluate(self, ds):
        """Test metrics of ds with the trained model's mixture: a dict with wauc, mean_auc,
        logloss and auc (one value per domain, NaN where undefined)."""
        lib = library()
        m = _P()
        _check(lib.mml_metrics_create(C.byref(m), self.ctx.handle, ds.n_domains), self.ctx)
        try:
            _check(lib.mml_trainer_evaluate(self.handle, ds.handle,
                                            lib.mml_trainer_mix_mode(self.handle), m), self.ctx)
            s = MetricsSummary()
            _check(lib.mml_metrics_compute_sized(m, C.byref(s), C.sizeof(s)), self.ctx)
            per = []
            for d in range(ds.n_domains):
                dm = DomainMetrics()
                _check(lib.mml_metrics_domain_sized(m, d, C.byref(dm), C.sizeof(dm)), self.ctx)
                per.append(dm.auc if dm.auc_defined else float("nan"))
            return {"wauc": s.wauc, "mean_auc": s.mean_auc, "logloss": s.logloss, "auc": per}
        finally:
            lib.mml_metrics_destroy(m)

    def take_model(self):
        """The trained model, read-only, owned by the caller (the trainer keeps its reports)."""
        h = _P()
        _check(library().mml_trainer_take_model(self.handle, C.byref(h)), self.ctx)
        model = Model(h, self.ctx)
        model.make_readonly()
        return model

    def close(self):
        if getattr(self, "handle", None):
            library().mml_trainer_destroy(self.handle)
            self.handle = None
            self.ctx._release()

    __del__ = close


def train(train_set, val_set, **options):
    """Trains with Trainer(**options) and returns the read-only model."""
    t = Trainer(train_set, val_set, **options).run()
    return t.take_model()


class Model(_Shared):
    """A trained or loaded model (mml_model); read-only once served."""

    def __init__(self, handle, ctx):
        self.handle, self.ctx = handle, ctx._retain()
        self._session = None

    @classmethod
    def load(cls, path, context=None):
        """Loads a model file and makes it read-only, ready for sessions."""
        ctx = context or Context()
        h = _P()
        _check(library().mml_model_load(C.byref(h), ctx.handle, os.fsencode(path)), ctx)
        model = cls(h, ctx)
        model.make_readonly()
        return model

    def save(self, path):
        _check(library().mml_model_save(self.handle, os.fsencode(path)), self.ctx)

    def make_readonly(self):
        if not library().mml_model_is_readonly(self.handle):
            _check(library().mml_model_make_readonly(self.handle), self.ctx)

    @property
    def n_domains(self):
        return library().mml_model_n_domains(self.handle)

    def session(self, threads=1, max_rows=1024):
        """A new session with a context of its own: one per thread."""
        return Session(self, Context(threads=threads), max_rows)

    def predict(self, ids, domain, dense=None):
        """P(click) of each row through this thread's default session; see Session.predict."""
        if self._session is None:
            self._session = self.session()
        return self._session.predict(ids, domain, dense)

    def close(self):
        self._closed = True
        if getattr(self, "_session", None):
            self._session.close()
            self._session = None
        if self.handle and self._users == 0:
            library().mml_model_destroy(self.handle)
            self.handle = None
            self.ctx._release()

    __del__ = close


class Session:
    """Per-thread predictions on a read-only model (mml_session)."""

    def __init__(self, model, ctx, max_rows=1024):
        self.model, self.ctx = model, ctx
        o = _init(SessionOptions, "mml_session_options_init_sized")
        o.max_rows = max_rows
        h = _P()
        _check(library().mml_session_create(C.byref(h), ctx.handle, model.handle, C.byref(o)),
               ctx)
        self.handle = h
        model._retain(), ctx._retain()

    def predict(self, ids, domain, dense=None, with_status=False):
        """P(click) per row (float32). A bad row (an id or domain out of range, a non-finite
        value) gets NaN; with_status=True also returns the per-row status codes."""
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.ndim == 1:
            ids = ids.reshape(1, -1)
        domain = np.ascontiguousarray(np.atleast_1d(domain), dtype=np.int32)
        n = ids.shape[0]
        if domain.shape != (n,):
            raise ValueError("domain must have one value per row of ids")
        v = BatchView()
        v.struct_size, v.n_fields, v.n_rows = C.sizeof(v), ids.shape[1], n
        v.ids, v.ids_row_stride, v.domain = _ptr(ids), ids.shape[1], _ptr(domain)
        if dense is not None:
            dense = np.ascontiguousarray(dense, dtype=np.float32).reshape(n, -1)
            v.n_dense, v.dense, v.dense_row_stride = dense.shape[1], _ptr(dense), dense.shape[1]
        prob = np.empty(n, dtype=np.float32)
        status = np.empty(n, dtype=np.int32)
        _check(library().mml_session_predict(self.handle, C.byref(v), _ptr(prob), _ptr(status)),
               self.ctx)
        return (prob, status) if with_status else prob

    def close(self):
        if getattr(self, "handle", None):
            library().mml_session_destroy(self.handle)
            self.handle = None
            self.ctx._release(), self.model._release()

    __del__ = close
