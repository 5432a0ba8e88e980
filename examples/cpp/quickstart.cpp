// Trains MoE-MLoRA on the built-in synthetic data, saves, loads and serves it.
#include <cstdio>

#include "moemlora.hpp"

int main() try {
    mml::Context ctx(2);
    mml::Datasets data = mml::Datasets::synthetic(ctx);
    mml::Trainer trainer(ctx, data);
    trainer.run();
    trainer.take_model().save("quickstart.mml");
    mml::Model model = mml::Model::load(ctx, "quickstart.mml");
    mml::Session session(ctx, model.make_readonly());
    session.bind({"user", "item", "domain"});
    mml::Predictions p = session.predict({{"3", "7", "0"}, {"3", "7", "2"}});
    std::printf("user 3, item 7: P(click) %.4f in domain 0, %.4f in domain 2\n", p.prob[0], p.prob[1]);
} catch (const mml::Error &e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 1;
}
