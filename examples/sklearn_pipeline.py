# Example: flashgp's GPRegressor inside a scikit-learn Pipeline (StandardScaler + GP) on the
# packaged concrete data; exits quietly when scikit-learn or flashgp.sklearn is unavailable.
"""scikit-learn Pipeline(StandardScaler, GPRegressor) on UCI concrete (data units throughout).

    python examples/sklearn_pipeline.py --iters 100
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from flashgp.datasets import load_uci


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=100, help="Adam steps (default 100)")
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training rows")
    parser.add_argument("--kernel", default="matern52", help="rbf, matern12, matern32, matern52 or rq")
    args = parser.parse_args(argv)
    try:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from flashgp.sklearn import GPRegressor
    except ImportError as err:
        print(f"skipping: flashgp.sklearn needs scikit-learn ({err}); pip install scikit-learn")
        return 0

    data = load_uci("concrete", standardize=False, max_train=args.max_train)  # raw data units
    x_train, y_train = data.x_train.numpy(), data.y_train.numpy()              # (n, 8), (n,)
    x_test, y_test = data.x_test.numpy(), data.y_test.numpy()
    pipe = make_pipeline(StandardScaler(), GPRegressor(kernel=args.kernel, iters=args.iters, random_state=0))
    pipe.fit(x_train, y_train)
    mean, std = pipe.predict(x_test, return_std=True)  # predictive, noise included, data units
    gp = pipe[-1]
    rmse = float(np.sqrt(np.mean((mean - y_test) ** 2)))
    coverage = float(np.mean(np.abs(y_test - mean) <= 1.96 * std))
    print(f"Pipeline(StandardScaler, GPRegressor(kernel={args.kernel!r}, iters={args.iters})) "
          f"on concrete: n_train={len(y_train)}, n_test={len(y_test)}")
    print(f"  test R^2 {pipe.score(x_test, y_test):.4f}   RMSE {rmse:.3f}   95% coverage {coverage:.3f}")
    print(f"  noise variance {gp.noise_:.4g}   log marginal likelihood {gp.log_marginal_likelihood_:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
