# A quick before/after timing of the exact GP's prediction and training step: the same synthetic
# model built several times in one process (for comparing two checkouts, alternated).
"""Time ``posterior(x_test).variance`` (first call: the mean solve, the Lanczos root, LOVE
variances) and one ``loss().backward()`` of an ExactGP on CG, ``--models`` times.

    python benchmarks/exact_predict_step.py after
    (cd OLD_CHECKOUT && PYTHONPATH=$PWD python /path/to/benchmarks/exact_predict_step.py before)

Data: n = 4,000 uniform points in d = 18 (float32), y = sum(sin(3 x)); 1,659 test points;
Scale(Matern-5/2, ARD) at its starting values, CG(exact_var_max=0, variance_tol=None, root_rank=100).
"""
import sys
import time
import warnings

import torch

import flashgp as fg


def main(label: str, models: int = 4) -> None:
    warnings.simplefilter("ignore")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4000, 18, generator=g)
    y = torch.sin(3 * x).sum(-1)
    x_test = torch.rand(1659, 18, generator=g)
    predict, step = [], []
    for _ in range(models):
        model = fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.Matern(nu=2.5, ard_dims=18)),
                           solver=fg.CG(exact_var_max=0, variance_tol=None, root_rank=100)).eval()
        start = time.perf_counter()
        model.posterior(x_test).variance
        predict.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.loss().backward()
        step.append(time.perf_counter() - start)
    print(label, "predict", " ".join(f"{v:.3f}" for v in predict), "| loss + backward",
          " ".join(f"{v:.3f}" for v in step))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "run")
