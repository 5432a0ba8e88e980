// A service-shaped program on the C++ wrapper: loads a saved model, makes it
// read-only, and serves raw rows from N threads, each with its own context
// and session. It checks that every thread's answers equal one session's on
// the same rows, bit for bit, and exits non-zero otherwise.
//
//   serve_threads MODEL.mml [THREADS]
//
// The rows are those of the model in tests/fixtures/moe_deepfm_1.2.mml
// (columns user, city, n, segment); a bad row's status is shown per row.
#include "moemlora.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

int main(int argc, char **argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: serve_threads MODEL.mml [THREADS]\n");
        return 2;
    }
    const int n_threads = argc > 2 ? std::atoi(argv[2]) : 4;
    try {
        mml::Context ctx;
        mml::Model model = mml::Model::load(ctx, argv[1]);
        model.make_readonly();
        const std::vector<std::string> columns = {"user", "city", "n", "segment"};
        static const char *const cities[] = {"paris", "rome", "oslo", "lima", "kyiv", "tokyo"};
        std::vector<std::vector<std::string>> rows;
        for (int r = 0; r < 300; r++)
            rows.push_back({"u" + std::to_string(r % 23), cities[r % 6],
                            std::to_string((r % 9) * 0.25 - 1.0), r % 2 ? "sports" : "news"});
        rows.push_back({"u1", "paris", "not-a-number", "news"}); // a bad row among good ones

        mml::Session reference(ctx, model, 64);
        reference.bind(columns);
        const mml::Predictions want = reference.predict(rows);

        std::vector<int> mismatches(n_threads, 0);
        std::vector<std::string> errors(n_threads);
        std::vector<std::thread> workers;
        for (int t = 0; t < n_threads; t++)
            workers.emplace_back([&, t] {
                try {
                    mml::Context own;
                    mml::Session session(own, model, 32 + 16 * t);
                    session.bind(columns);
                    for (int round = 0; round < 20; round++) {
                        mml::Predictions got = session.predict(rows);
                        for (size_t i = 0; i < rows.size(); i++)
                            if (got.status[i] != want.status[i] ||
                                std::memcmp(&got.prob[i], &want.prob[i], sizeof(float)) != 0)
                                mismatches[t]++;
                    }
                } catch (const mml::Error &e) {
                    errors[t] = e.what();
                }
            });
        for (auto &w : workers)
            w.join();
        int bad = 0;
        for (int t = 0; t < n_threads; t++) {
            if (!errors[t].empty()) {
                std::fprintf(stderr, "thread %d: %s\n", t, errors[t].c_str());
                bad = 1;
            }
            if (mismatches[t]) {
                std::fprintf(stderr, "thread %d: %d answers differ\n", t, mismatches[t]);
                bad = 1;
            }
        }
        size_t last = rows.size() - 1;
        if (want.status[last] != MML_EPARSE || !std::isnan(want.prob[last]) ||
            want.bad_column[last] != 2) {
            std::fprintf(stderr, "the bad row was not reported: status %d, column %d\n",
                         (int)want.status[last], (int)want.bad_column[last]);
            bad = 1;
        }
        for (size_t i = 0; i < last; i++)
            if (want.status[i] != MML_OK || !(want.prob[i] > 0.0f && want.prob[i] < 1.0f)) {
                std::fprintf(stderr, "row %zu: status %d, p %g\n", i, (int)want.status[i],
                             (double)want.prob[i]);
                bad = 1;
            }
        std::printf("%d threads x 20 rounds x %zu rows: %s; row 0 p=%.6f, last row: %s\n",
                    n_threads, rows.size(), bad ? "FAILED" : "all equal to one session's",
                    (double)want.prob[0], mml_status_str(want.status[last]));
        // Errors arrive as exceptions with the library's message.
        try {
            mml::Model::load(ctx, "/nonexistent/model.mml");
            std::fprintf(stderr, "loading a missing file did not throw\n");
            bad = 1;
        } catch (const mml::Error &e) {
            std::printf("a missing file: %s\n", e.what());
        }
        return bad;
    } catch (const mml::Error &e) {
        std::fprintf(stderr, "serve_threads: %s\n", e.what());
        return 1;
    }
}
