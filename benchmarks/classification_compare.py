"""GP classification on a large binary set: flashgp's GPClassifier (method="svgp" and
"dirichlet") on all training rows against GPyTorch 1.15's SVGP with a Bernoulli likelihood (the
same inducing points, batches, steps and Adam lr as flashgp's svgp) and scikit-learn's
GaussianProcessClassifier, which is O(n^3) and gets a random subsample (``--sklearn-n``).
Accuracy, log loss, expected calibration error (10 bins) and fit seconds on the test rows.

    python benchmarks/classification_compare.py --data DIR/ijcnn1 --device cuda --out results/...

DIR/ijcnn1: train.csv.gz and test.csv.gz with a header, the last column the 0/1 label
(../shared/data/classification). flashgp runs in float32 on CUDA, float64 on the CPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, ConstantKernel
from sklearn.metrics import accuracy_score, log_loss
from sklearn.preprocessing import StandardScaler

import torch

from flashgp.minibatches import Minibatches
from flashgp.plot import expected_calibration_error
from flashgp.sklearn import GPClassifier

from results_file import write_results


def load(folder: str, part: str):
    table = np.loadtxt(f"{folder}/{part}.csv.gz", delimiter=",", skiprows=1)
    return table[:, :-1], table[:, -1].astype(int)


def measure(name: str, estimator, X, y, X_test, y_test) -> dict:
    start = time.perf_counter()
    estimator.fit(X, y)
    seconds = time.perf_counter() - start
    proba = estimator.predict_proba(X_test)
    return {"method": name, "n_train": len(y), "fit_s": round(seconds, 2),
            "accuracy": round(accuracy_score(y_test, proba.argmax(1)), 4),
            "log_loss": round(log_loss(y_test, proba), 4),
            "ece": round(expected_calibration_error(proba, y_test), 4)}


class PeerClassifier:
    """GPyTorch's SVGP classifier (whitened VariationalStrategy, Cholesky q(u), BernoulliLikelihood,
    VariationalELBO) as a fit/predict_proba object on standardized inputs, trained on the batches
    flashgp's fit draws (``Minibatches`` with the same seed) with the same inducing start."""

    def __init__(self, inducing: int, iters: int, lr: float, device: str, batch_size: int = 1024):
        self.inducing, self.iters, self.lr, self.device, self.batch_size = inducing, iters, lr, device, batch_size

    def fit(self, X, y):
        import gpytorch
        self.scaler = StandardScaler().fit(X)
        x = torch.as_tensor(self.scaler.transform(X), dtype=torch.float32, device=self.device)
        t = torch.as_tensor(y, dtype=torch.float32, device=self.device)
        z = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:self.inducing].to(x.device)]

        class Model(gpytorch.models.ApproximateGP):
            def __init__(self):
                q = gpytorch.variational.CholeskyVariationalDistribution(z.shape[0])
                super().__init__(gpytorch.variational.VariationalStrategy(self, z.clone(), q,
                                                                          learn_inducing_locations=True))
                self.mean_module = gpytorch.means.ConstantMean()
                self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=x.shape[1]))

            def forward(self, v):
                return gpytorch.distributions.MultivariateNormal(self.mean_module(v), self.covar_module(v))

        self.model = Model().to(self.device)
        self.likelihood = gpytorch.likelihoods.BernoulliLikelihood().to(self.device)
        mll = gpytorch.mlls.VariationalELBO(self.likelihood, self.model, num_data=len(t))
        opt = torch.optim.Adam([*self.model.parameters(), *self.likelihood.parameters()], lr=self.lr)
        batches = Minibatches((x, t), self.batch_size, seed=0)
        self.model.train(), self.likelihood.train()
        for step in range(self.iters):
            xb, yb = batches.batch(step)
            opt.zero_grad()
            loss = -mll(self.model(xb), yb)
            loss.backward()
            opt.step()
            float(loss)  # read back each step, as flashgp's fit does
        return self

    def predict_proba(self, X):
        x = torch.as_tensor(self.scaler.transform(X), dtype=torch.float32, device=self.device)
        self.model.eval(), self.likelihood.eval()
        with torch.no_grad():
            p = torch.cat([self.likelihood(self.model(part)).probs for part in x.split(4096)]).double().cpu().numpy()
        return np.stack([1 - p, p], 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-train", type=int, default=None, help="use at most this many training rows")
    p.add_argument("--max-test", type=int, default=None, help="score at most this many test rows (a random subset)")
    p.add_argument("--sklearn-n", type=int, default=2000)
    p.add_argument("--svgp-iters", type=int, default=2000)
    p.add_argument("--dirichlet-iters", type=int, default=30)
    p.add_argument("--methods", default="svgp,gpytorch,dirichlet,sklearn")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    X, y = load(args.data, "train")
    X_test, y_test = load(args.data, "test")
    rng = np.random.default_rng(0)
    if args.max_test is not None and args.max_test < len(y_test):
        keep = rng.choice(len(y_test), args.max_test, replace=False)
        X_test, y_test = X_test[keep], y_test[keep]
    if args.max_train is not None and args.max_train < len(y):
        keep = rng.choice(len(y), args.max_train, replace=False)
        X, y = X[keep], y[keep]
    dtype = "float32" if args.device == "cuda" else "float64"
    rows = []
    methods = args.methods.split(",")
    if "svgp" in methods:
        rows.append(measure("flashgp svgp (m=500, batch 1024)", GPClassifier(
            method="svgp", inducing=500, iters=args.svgp_iters, lr=0.01, device=args.device, dtype=dtype,
            random_state=0), X, y, X_test, y_test))
    if "gpytorch" in methods:
        rows.append(measure("GPyTorch SVGP + Bernoulli (m=500, batch 1024)",
                            PeerClassifier(500, args.svgp_iters, 0.01, args.device), X, y, X_test, y_test))
    if "dirichlet" in methods:
        rows.append(measure("flashgp dirichlet (exact, BBMM)", GPClassifier(
            iters=args.dirichlet_iters, device=args.device, dtype=dtype, random_state=0), X, y, X_test, y_test))
    if "sklearn" in methods:
        sub = rng.choice(len(y), min(args.sklearn_n, len(y)), replace=False)
        scaler = StandardScaler().fit(X[sub])
        gpc = GaussianProcessClassifier(ConstantKernel() * RBF(np.ones(X.shape[1])), random_state=0)
        row = measure(f"scikit-learn GPC (subsample {len(sub)})", gpc, scaler.transform(X[sub]), y[sub],
                      scaler.transform(X_test), y_test)
        rows.append(row)
    header = "| method | n train | fit s | accuracy | log loss | ECE |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
    table = header + "".join(f"| {r['method']} | {r['n_train']} | {r['fit_s']} | {r['accuracy']} | {r['log_loss']} | "
                             f"{r['ece']} |\n" for r in rows)
    print(table)
    if args.out:
        write_results(args.out, rows, args, extra={"table": table})


if __name__ == "__main__":
    main()
