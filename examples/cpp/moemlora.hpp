// A header-only C++17 wrapper of libmoemlora: handles as move-only classes
// that free what they own, failing calls as mml::Error exceptions that carry
// the library's status code and message. Only the C API (moemlora.h) is
// used, so the wrapper links against the shared library like any C caller.
#ifndef MOEMLORA_HPP
#define MOEMLORA_HPP

#include <moemlora/moemlora.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mml {

// A failed call: code() is the MML_E* status, what() the context's message.
class Error : public std::runtime_error {
  public:
    Error(int code, const std::string &message)
        : std::runtime_error(message + " (" + mml_status_str(code) + ")"), code_(code) {}
    int code() const noexcept { return code_; }

  private:
    int code_;
};

namespace detail {
inline void check(int rc, const mml_ctx *ctx, const char *what)
{
    if (rc >= 0)
        return;
    const char *msg = ctx ? mml_ctx_last_error(ctx) : nullptr;
    throw Error(rc, std::string(what) + ": " + (msg && *msg ? msg : mml_status_str(rc)));
}
template <class T, void (*Free)(T *)> struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <class T, void (*Free)(T *)> using Handle = std::unique_ptr<T, Deleter<T, Free>>;
} // namespace detail

// Allocator, thread count, seed and last error; one thread at a time.
class Context {
  public:
    explicit Context(uint32_t threads = 1, uint64_t seed = 1)
    {
        mml_ctx_options o;
        mml_ctx_options_init(&o);
        o.n_threads = threads;
        o.seed = seed;
        mml_ctx *c = nullptr;
        detail::check(mml_ctx_create(&c, &o), nullptr, "mml_ctx_create");
        ctx_.reset(c);
    }
    mml_ctx *get() const noexcept { return ctx_.get(); }

  private:
    detail::Handle<mml_ctx, mml_ctx_destroy> ctx_;
};

// Train, validation and test rows of one CSV layout (mml_csv_load()).
class Datasets {
  public:
    Datasets(Context &ctx, const mml_csv_options &opt, const std::string &train,
             const std::string &val, const std::string &test)
    {
        mml_dataset *a = nullptr, *b = nullptr, *c = nullptr;
        detail::check(mml_csv_load(ctx.get(), &opt, train.c_str(), val.c_str(), test.c_str(), &a,
                                   &b, &c),
                      ctx.get(), "mml_csv_load");
        train_.reset(a);
        val_.reset(b);
        test_.reset(c);
    }
    // The built-in synthetic data set (mml_synthetic_generate()), split 60/20/20.
    static Datasets synthetic(Context &ctx, const mml_synthetic_options *opt = nullptr)
    {
        mml_dataset *a = nullptr, *b = nullptr, *c = nullptr;
        detail::check(mml_synthetic_generate(ctx.get(), opt, &a, &b, &c), ctx.get(),
                      "mml_synthetic_generate");
        return Datasets(a, b, c);
    }
    const mml_dataset *train() const noexcept { return train_.get(); }
    const mml_dataset *val() const noexcept { return val_.get(); }
    const mml_dataset *test() const noexcept { return test_.get(); }

  private:
    Datasets(mml_dataset *a, mml_dataset *b, mml_dataset *c) : train_(a), val_(b), test_(c) {}
    detail::Handle<mml_dataset, mml_dataset_destroy> train_, val_, test_;
};

// A model: trained (Trainer::take_model()) or loaded from a file. After
// make_readonly() any number of threads may share it through Sessions.
class Model {
  public:
    static Model load(Context &ctx, const std::string &path)
    {
        mml_model *m = nullptr;
        detail::check(mml_model_load(&m, ctx.get(), path.c_str()), ctx.get(), "mml_model_load");
        return Model(m, ctx.get());
    }
    Model(mml_model *m, const mml_ctx *ctx) : model_(m), ctx_(ctx) {}
    void save(const std::string &path) const
    {
        detail::check(mml_model_save(model_.get(), path.c_str()), ctx_, "mml_model_save");
    }
    Model &make_readonly()
    {
        detail::check(mml_model_make_readonly(model_.get()), ctx_, "mml_model_make_readonly");
        return *this;
    }
    mml_model *get() const noexcept { return model_.get(); }

  private:
    detail::Handle<mml_model, mml_model_destroy> model_;
    const mml_ctx *ctx_;
};

// The staged trainer over a data set's rows.
class Trainer {
  public:
    Trainer(Context &ctx, const mml_trainer_options &opt, const Datasets &data)
        : Trainer(ctx, &opt, data)
    {
    }
    // The defaults: MoE-MLoRA on the MLP backbone (mml_trainer_options_init()).
    Trainer(Context &ctx, const Datasets &data) : Trainer(ctx, nullptr, data) {}
    Trainer(Context &ctx, const mml_trainer_options *opt, const Datasets &data) : ctx_(ctx.get())
    {
        mml_trainer *t = nullptr;
        detail::check(mml_trainer_create(&t, ctx_, opt, data.train(), data.val()), ctx_,
                      "mml_trainer_create");
        trainer_.reset(t);
    }
    void run() { detail::check(mml_trainer_run(trainer_.get()), ctx_, "mml_trainer_run"); }
    // The trained model, which outlives the trainer.
    Model take_model()
    {
        mml_model *m = nullptr;
        detail::check(mml_trainer_take_model(trainer_.get(), &m), ctx_, "mml_trainer_take_model");
        return Model(m, ctx_);
    }
    mml_trainer *get() const noexcept { return trainer_.get(); }

  private:
    detail::Handle<mml_trainer, mml_trainer_destroy> trainer_;
    mml_ctx *ctx_;
};

// Predictions of raw rows: a row's probability (NaN for a bad row), its
// status (MML_OK or a negative code) and its bad column (-1 when good).
struct Predictions {
    std::vector<float> prob;
    std::vector<int32_t> status;
    std::vector<int32_t> bad_column;
};

// One thread's view of a read-only model: owns all scratch, so predictions
// within the reserved rows do not allocate in the library.
class Session {
  public:
    Session(Context &ctx, const Model &model, int64_t max_rows = 1024) : ctx_(ctx.get())
    {
        mml_session_options o;
        mml_session_options_init(&o);
        o.max_rows = max_rows;
        mml_session *s = nullptr;
        detail::check(mml_session_create(&s, ctx_, model.get(), &o), ctx_, "mml_session_create");
        session_.reset(s);
    }
    // Binds the caller's column names (a CSV header) to the model's schema.
    void bind(const std::vector<std::string> &columns)
    {
        std::vector<const char *> names;
        for (const auto &c : columns)
            names.push_back(c.c_str());
        detail::check(mml_session_bind_columns(session_.get(), (int32_t)names.size(), names.data()),
                      ctx_, "mml_session_bind_columns");
        n_columns_ = columns.size();
    }
    // Rows of raw values in the bound column order.
    Predictions predict(const std::vector<std::vector<std::string>> &rows)
    {
        std::vector<const char *> values;
        std::vector<size_t> lens;
        for (const auto &row : rows) {
            if (row.size() != n_columns_)
                throw Error(MML_EINVAL, "Session::predict: a row has " +
                                            std::to_string(row.size()) + " values, not " +
                                            std::to_string(n_columns_));
            for (const auto &v : row) {
                values.push_back(v.data());
                lens.push_back(v.size());
            }
        }
        Predictions p;
        p.prob.resize(rows.size());
        p.status.resize(rows.size());
        p.bad_column.resize(rows.size());
        detail::check(mml_session_predict_raw(session_.get(), (int64_t)rows.size(), values.data(),
                                              lens.data(), p.prob.data(), p.status.data(),
                                              p.bad_column.data()),
                      ctx_, "mml_session_predict_raw");
        return p;
    }
    mml_session *get() const noexcept { return session_.get(); }

  private:
    detail::Handle<mml_session, mml_session_destroy> session_;
    mml_ctx *ctx_;
    size_t n_columns_ = 0;
};

} // namespace mml

#endif
