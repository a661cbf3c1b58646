# GPRegressor on a data set too large for scikit-learn's exact GP (n = 50,000 by default).
# Usage: python benchmarks/sklearn_large.py [--n 50000] [--iters 20] [--device auto]
"""Fit flashgp.sklearn.GPRegressor (default settings but ``iters``) on n synthetic points in
d = 4 and predict mean and standard deviation for a held-out tenth, printing the fit and predict
times, the solver path and backend, test RMSE and the 95% interval coverage. scikit-learn's
GaussianProcessRegressor would need n^2 float64 entries (20 GB at n = 50,000) for K alone."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashgp.sklearn import GPRegressor  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--d", type=int, default=4)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    m = args.n // 10
    x = rng.uniform(size=(args.n + m, args.d))
    y = np.sin(2 * np.pi * x).sum(1) / np.sqrt(args.d) + 0.1 * rng.standard_normal(args.n + m)
    est = GPRegressor(iters=args.iters, device=args.device, dtype="float32", random_state=0)
    start = time.perf_counter()
    est.fit(x[: args.n], y[: args.n])
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    mean, std = est.predict(x[args.n:], return_std=True)
    predict_s = time.perf_counter() - start
    resid = mean - y[args.n:]
    diag = est.model_.diagnostics
    result = dict(n=args.n, d=args.d, iters=args.iters, fit_seconds=round(fit_s, 2),
                  predict_seconds=round(predict_s, 2), test_points=m,
                  rmse=float(np.sqrt(np.mean(resid**2))),
                  coverage95=float(np.mean(np.abs(resid) <= 1.96 * std)),
                  path=diag.get("path"), backend=diag.get("backend"), device=str(est.model_.train_x.device),
                  noise_std=float(np.sqrt(est.noise_)))
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
