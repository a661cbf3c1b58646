# Example: GP classification with flashgp's scikit-learn estimator, GPClassifier, on a 2-D
# "moons" set: the Dirichlet-based GP (exact engine) and an SVGP (Bernoulli or Softmax
# likelihood, minibatches) side by side, with accuracy, log loss, expected calibration error,
# decision-boundary and reliability plots. Exits quietly without scikit-learn.
"""GPClassifier(method="dirichlet") and GPClassifier(method="svgp") on interleaved half moons.

    python examples/gp_classification.py                          # 2 classes, 1,000 points
    python examples/gp_classification.py --classes 3 --n 3000     # 3 moons: Softmax for the SVGP

The moons are noisy half circles, one per class, each facing the next; --classes 2 is the
familiar two-moons problem. Both classifiers use an RBF kernel with one lengthscale per input.
The figures (decision_boundary.png, reliability.png) go to --out (default: a temp dir).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np


def moons(n: int, classes: int, noise: float, rng: np.random.Generator):
    """n points on ``classes`` interleaved half circles (class k centred at (k, k mod 2 / 2),
    opening downwards for odd k), with Gaussian noise of std ``noise``; labels 0..classes-1."""
    labels = rng.integers(0, classes, size=n)
    t = rng.uniform(0, math.pi, size=n)
    sign = np.where(labels % 2 == 0, 1.0, -1.0)
    X = np.stack([labels + sign * np.cos(t), 0.5 * (labels % 2) + sign * np.sin(t)], axis=1)
    return X + rng.normal(0, noise, size=X.shape), labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="training points (default 1,000)")
    parser.add_argument("--test", type=int, default=2000, help="test points (default 2,000)")
    parser.add_argument("--classes", type=int, default=2, help="number of moons (default 2)")
    parser.add_argument("--noise", type=float, default=0.25, help="noise std of the points (default 0.25)")
    parser.add_argument("--iters", type=int, default=100, help="Adam steps of each classifier (default 100)")
    parser.add_argument("--svgp-iters", type=int, default=None, help="Adam steps of the SVGP (default: 3 x iters)")
    parser.add_argument("--inducing", type=int, default=64, help="SVGP inducing points (default 64)")
    parser.add_argument("--batch-size", type=int, default=256, help="SVGP minibatch size (default 256)")
    parser.add_argument("--methods", default="dirichlet,svgp", help="comma-separated (default dirichlet,svgp)")
    parser.add_argument("--out", default=None, help="folder for the figures (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from sklearn.metrics import log_loss

        from flashgp.sklearn import GPClassifier
    except ImportError as err:
        print(f"skipping: flashgp.sklearn needs scikit-learn ({err}); pip install scikit-learn")
        return 0
    from flashgp.plot import expected_calibration_error

    rng = np.random.default_rng(args.seed)
    X, y = moons(args.n, args.classes, args.noise, rng)
    X_test, y_test = moons(args.test, args.classes, args.noise, rng)
    print(f"moons: {args.classes} classes, n_train={args.n}, n_test={args.test}, noise {args.noise}")
    settings = {
        "dirichlet": dict(method="dirichlet", iters=args.iters),
        "svgp": dict(method="svgp", iters=args.svgp_iters or 3 * args.iters, inducing=args.inducing,
                     batch_size=args.batch_size, lr=0.05),
    }
    fitted = {}
    for name in args.methods.split(","):
        clf = GPClassifier(kernel="rbf", random_state=args.seed, **settings[name])
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        proba = clf.predict_proba(X_test)
        predict_ms = 1e3 * (time.perf_counter() - start)
        accuracy = float(np.mean(clf.classes_[proba.argmax(1)] == y_test))
        ece = expected_calibration_error(proba, y_test)
        print(f"  {name:<9} ({type(clf.model_.likelihood).__name__:<10}) accuracy {accuracy:.3f}   "
              f"log loss {log_loss(y_test, proba, labels=clf.classes_):.4f}   ECE {ece:.4f}   "
              f"fit {seconds:5.1f} s ({clf.n_iter_} steps)   predict {predict_ms:.0f} ms")
        fitted[name] = (clf, proba)

    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'flashgp[plot]')")
        return 0
    from flashgp.plot import plot_decision_boundary, plot_reliability

    out = Path(args.out or tempfile.mkdtemp(prefix="flashgp-classification-"))
    out.mkdir(parents=True, exist_ok=True)
    boundary, reliability = Figure(figsize=(5.5 * len(fitted), 4.5)), Figure(figsize=(4.5 * len(fitted), 4.2))
    for ax_b, ax_r, (name, (clf, proba)) in zip(boundary.subplots(1, len(fitted), squeeze=False)[0],
                                                reliability.subplots(1, len(fitted), squeeze=False)[0],
                                                fitted.items()):
        plot_decision_boundary(clf.predict_proba, X, y, resolution=120, ax=ax_b)
        ax_b.set_title(f"GPClassifier(method={name!r})")
        plot_reliability(proba, y_test, ax=ax_r)
        ax_r.set_title(f"{name}: {ax_r.get_title()}")
    for figure, filename in ((boundary, "decision_boundary.png"), (reliability, "reliability.png")):
        figure.tight_layout()
        figure.savefig(out / filename, dpi=90)
        print(f"plot: {out / filename}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
