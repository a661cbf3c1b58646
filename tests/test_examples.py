# Runs every script in examples/ at a small size in a subprocess (two at a time) and checks
# that it succeeds and prints its results; the 1-D and multitask examples also write their plots.
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def cases(tmp: Path) -> dict:
    """script -> (arguments for a small run, texts its output must contain)."""
    plot = tmp / "regression_1d.png"
    return {
        "regression_1d.py": (["--n", "40", "--iters", "3", "--plot", str(plot)],
                             ["RMSE of the posterior mean", "plot: " if has("matplotlib") else "no plot"]),
        "uci_exact_gp.py": (["--iters", "2", "--max-train", "150", "--solver", "cg"],
                            ["concrete: n_train=150", "95% coverage", "solver path cg"]),
        "sgpr_uci.py": (["--iters", "3", "--max-train", "150", "--inducing", "20"],
                        ["concrete: n_train=150", "SGPR", "<= exact mll", "inducing points moved"]),
        "large_gpu_fit.py": (["--n", "300", "--iters", "2", "--test", "50", "--device", "cpu"],
                             ["n=300, d=3", "CG iterations", "test RMSE"]),
        "distributed_fit.py": (["--n-train", "200", "--iters", "2", "--n-test", "30"],
                               ["1 process (gloo", "test: RMSE"]),
        "ski_large.py": (["--n", "3000", "--iters", "2", "--test", "200", "--grid", "200"],
                         ["n=3000, grid=200", "backend ski", "test RMSE"]),
        "sklearn_pipeline.py": (["--iters", "2", "--max-train", "120"],
                                ["test R^2"] if has("sklearn") else ["skipping"]),
        "svgp_regression.py": (["--n", "3000", "--iters", "60", "--test", "300", "--inducing", "30", "--compare"],
                               ["SVGP: n=3,000", "resumed at step", "largest parameter difference 0.0e+00",
                                "test RMSE", "loaded predictions identical: True"]),
        "multitask_regression.py": (["--n", "30", "--iters", "15", "--plot", str(tmp / "multitask.png")],
                                    ["MultitaskGP on the grid: structure kronecker", "independent",
                                     "learned task correlations", "test RMSE of task 0",
                                     "plot: " if has("matplotlib") else "no plot"]),
        "gp_classification.py": (["--n", "200", "--test", "200", "--iters", "10", "--out", str(tmp / "classification")],
                                 ["dirichlet", "svgp", "ECE", "plot: " if has("matplotlib") else "no plots"]
                                 if has("sklearn") else ["skipping"]),
        "subset_training.py": (["--n", "400", "--iters", "5", "--batch-size", "64"],
                               ["subset SGD: n=400, m=64", "test RMSE"]),
        "itergp_budget.py": (["--n", "150", "--test", "50", "--iters", "3"],
                             ["IterGP: n=150", "| pivoted | 150 |", "stopped: "]),
        "deep_kernel.py": (["--data", "concrete", "--max-train", "150", "--max-test", "100", "--iters", "3"],
                           ["concrete: n_train=150", "deep kernel MLP", "test RMSE", "same predictions True"]),
        "mixed_inputs.py": (["--n", "200", "--large", "3000", "--basis", "6", "--iters", "5", "--test", "200"],
                            ["exact GP, Matern x Categorical", "likelihood from statistics",
                             "learned correlation between two machine types", "same predictions True"]),
        "bayesian_optimization.py": (["--problem", "branin", "--iters", "2", "--num-restarts", "2",
                                      "--raw-samples", "32"],
                                     ["branin (d=2", "SingleTaskGP best", "flashgp: simple regret"]
                                     if has("botorch") else ["skipping"]),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("examples")

    def run(item):
        script, (args, _) = item
        return subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp, env=ENV,
                              capture_output=True, text=True, timeout=300)

    todo = cases(tmp)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(todo, pool.map(run, todo.items())))
    return tmp, todo, results


def test_large_gpu_fit_resumes_from_its_checkpoint(tmp_path):
    """--checkpoint: a second run of a longer fit goes on from the first one's last step."""
    args = [sys.executable, str(EXAMPLES / "large_gpu_fit.py"), "--n", "200", "--test", "20",
            "--device", "cpu", "--checkpoint", str(tmp_path / "fit.ckpt"), "--checkpoint-every", "1"]
    first = subprocess.run(args + ["--iters", "2"], cwd=tmp_path, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0 and "resumed" not in first.stdout, first.stderr[-3000:]
    second = subprocess.run(args + ["--iters", "3"], cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step 2" in second.stdout and "training: 1 steps" in second.stdout, second.stdout


@pytest.mark.parametrize("script", list(cases(Path("."))))
def test_example_runs_small(runs, script):
    tmp, todo, results = runs
    proc = results[script]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in todo[script][1]:
        assert text in proc.stdout, proc.stdout
    if script == "regression_1d.py" and has("matplotlib"):
        assert (tmp / "regression_1d.png").stat().st_size > 10_000
    if script == "multitask_regression.py" and has("matplotlib"):
        assert (tmp / "multitask.png").stat().st_size > 10_000


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(cases(Path(".")))
