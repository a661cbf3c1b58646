"""flashgp.plot on a UCI data set: predicted against observed, calibration, training curve.

    python docs/examples/plots.py --plot plots.png
"""
from __future__ import annotations

import argparse

import torch
from matplotlib.figure import Figure

import flashgp as fg
from flashgp.datasets import load_uci
from flashgp.plot import interval_coverage, plot_calibration, plot_history, plot_predicted_vs_observed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--plot", metavar="PNG", default="plots.png")
    args = parser.parse_args(argv)

    data = load_uci("concrete", max_train=400)                # standardized, float64
    model = fg.ExactGP(data.x_train, data.y_train, fg.kernels.Scale(fg.kernels.Matern(ard_dims=data.d)))
    history = fg.fit(model, iters=args.iters, progress=False, seed=0)
    pred = model.predict(data.x_test)                         # y*: noise included
    mean, std, y = pred.mean, pred.stddev, data.y_test

    levels = (0.5, 0.9, 0.95)
    print("observed coverage of the central intervals:",
          dict(zip(levels, interval_coverage(mean, std, y, levels).round(3).tolist())))

    figure = Figure(figsize=(12, 3.8), layout="constrained")
    a, b, c = figure.subplots(1, 3)
    plot_predicted_vs_observed(mean, std, y, ax=a)
    plot_calibration(mean, std, y, ax=b)
    plot_history(history, ax=c)
    figure.savefig(args.plot, dpi=90)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
