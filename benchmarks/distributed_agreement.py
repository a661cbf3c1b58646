# Benchmark (agreement, not speed): ShardedExactGP's checkpoints, files and LOVE posteriors on gloo
# processes against one process, through the workers of tests/distributed (CPU, float64, 60 rows).
"""Prints the largest relative differences, max |a - b| / max |b|, of

- a fit checkpointed after 3 of 5 steps on 4 processes and resumed on 2, against an
  uninterrupted single-process fit (losses, hyperparameters);
- fg.save of the 4-process model read by flashgp.distributed.load on 2 processes, against
  fg.load on one (posterior means and variances at 7 points);
- LOVE posteriors above exact_var_max (rank-12 root) on 2 processes, and local_posterior at
  each process's own points, against one process's LOVE posterior.

    python benchmarks/distributed_agreement.py
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "distributed"))

import flashgp as fg  # noqa: E402
import model_worker as mw  # noqa: E402
import sharded_worker as w  # noqa: E402
import test_sharded_files as files  # noqa: E402
import test_sharded_model as models  # noqa: E402


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def main() -> None:
    warnings.simplefilter("ignore", fg.NumericalWarning)
    folder = Path(tempfile.mkdtemp())
    files.spawn(folder, 4, "write", files.WRITE_ITERS)
    resumed = files.spawn(folder, 2, "resume")
    losses, fitted, _ = files.single_process(files.ALL_ITERS)
    print(f"checkpoint of 4 resumed on 2: losses {max(rel(r['loss'], losses) for r in resumed):.2g}, "
          f"hyperparameters {max(rel(r['fitted'][k], v) for r in resumed for k, v in fitted.items()):.2g}")
    one = fg.load(folder / "model.fgp")
    loaded = files.spawn(folder, 2, "load")
    post = one.posterior(mw.test_points())
    print(f"file of 4 loaded on 2: means {max(rel(r['mean'], post.mean) for r in loaded):.2g}, "
          f"variances {max(rel(r['variance'], post.variance) for r in loaded):.2g} (one process certified)")
    x, y = w.data(sum(models.COUNTS))
    res = models.spawn(Path(tempfile.mkdtemp()), "love")
    one = fg.ExactGP(x, y, mw.kernel(), solver=mw.love_solver())
    post = one.posterior(mw.test_points())
    change = one.diagnostics["variance_root_change"]
    print(f"LOVE on 2: means {max(rel(r['mean'], post.mean) for r in res):.2g}, variances "
          f"{max(rel(r['variance'], post.variance) for r in res):.2g}, covariance "
          f"{max(rel(r['covariance'], post.covariance.to_dense()) for r in res):.2g}, root change "
          f"{res[0]['diagnostics']['variance_root_change']:.4f} (one process {change:.4f})")
    for r, out in enumerate(res):
        local = one.posterior(mw.test_points(10)[r::len(models.COUNTS)])
        print(f"local_posterior, rank {r}: means {rel(out['local_mean'], local.mean):.2g}, "
              f"variances {rel(out['local_variance'], local.variance):.2g}")


if __name__ == "__main__":
    main()
