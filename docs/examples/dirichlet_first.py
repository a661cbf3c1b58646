import torch
import flashgp as fg

# 300 points in 2-D, 3 classes (by angle around the origin), 10% of the labels flipped
g = torch.Generator().manual_seed(0)
x = torch.randn(300, 2, generator=g, dtype=torch.float64)
labels = ((torch.atan2(x[:, 1], x[:, 0]) + torch.pi) / (2 * torch.pi / 3)).long().clamp(max=2)
flip = torch.rand(300, generator=g) < 0.1
labels[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=g)

# C = 3 exact GP regressions of the Dirichlet-transformed labels, one batch, one kernel each
model = fg.DirichletGP(x, labels, fg.kernels.Scale(fg.kernels.RBF(ard_dims=2)))
fg.fit(model, lr=0.1, iters=50, progress=False)

x_test = torch.tensor([[1.0, 0.2], [-1.0, 0.5], [0.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
proba = model.predict_proba(x_test, generator=torch.Generator().manual_seed(0))  # (4, 3)
print("classes:", model.num_classes, " solver path:", model.diagnostics["path"])
print("probabilities:\n", proba)
print("labels:", model.predict_labels(x_test, generator=torch.Generator().manual_seed(0)))
