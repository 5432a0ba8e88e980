import numpy as np, moemlora as mml  # trains MoE-MLoRA on numpy arrays, saves, loads, serves
rng, n = np.random.default_rng(0), 30000
user, item, domain = rng.integers(0, 100, n), rng.integers(0, 50, n), rng.integers(0, 3, n)
taste = rng.normal(0, 2, (3, 50))  # each domain likes other items
labels = (rng.random(n) < 1 / (1 + np.exp(-taste[domain, item]))).astype(np.float32)
train, val, test = mml.Dataset.from_arrays(np.c_[user, item, domain], labels, domain_field=2).split()
mml.train(train, val, variant="moe").save("quickstart.mml")
model = mml.Model.load("quickstart.mml")
print("P(click):", model.predict(test.ids[:5], test.domain[:5]), "labels:", test.labels[:5])
