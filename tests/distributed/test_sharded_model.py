# flashgp.distributed.ShardedExactGP on 2 gloo processes (spawned here, CPU, float64, 33/27 rows):
# its initial values, an fg.fit of 5 Adam steps and posterior means and variances equal those of a
# single-process ExactGP on all 60 rows with the same solver and seed; the refusals are clear.
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flashgp as fg
from flashgp.distributed import ShardedExactGP

import model_worker as mw
import sharded_worker as w

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

COUNTS = (33, 27)


def spawn(tmp_path, mode="fit"):
    mp.spawn(mw.worker, args=(len(COUNTS), str(tmp_path / "init"), list(COUNTS), str(tmp_path), mode),
             nprocs=len(COUNTS), join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(len(COUNTS))]


def relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def single_process():
    torch.set_num_threads(1)
    x, y = w.data(sum(COUNTS))
    model = fg.ExactGP(x, y, mw.kernel(), solver=mw.solver())
    out = {"initial": mw.values(model)}
    history = fg.fit(model, iters=mw.ITERS, lr=mw.LR, seed=mw.FIT_SEED, progress=False)
    out.update(loss=torch.tensor(history.loss), fitted=mw.values(model))
    post = model.posterior(mw.test_points())
    out.update(mean=post.mean.detach(), certified=post.variance.detach())
    with torch.no_grad():  # the exact variances by a dense Cholesky factor (CG's are certified upper bounds)
        xs = mw.test_points()
        k_hat = model.kernel(x, x) + torch.diag(model.likelihood.noise_diag(len(x)))
        cross = model.kernel(x, xs)
        solved = torch.cholesky_solve(cross, torch.linalg.cholesky(k_hat))
        out["variance"] = model.kernel(xs, xs).diagonal() - (cross * solved).sum(0)
    return out


def test_fit_and_posterior_match_single_process(tmp_path):
    results = spawn(tmp_path)
    one = single_process()
    for r, res in enumerate(results):
        assert res["num_train"] == 60 and res["n_diag"] == 60
        # (a) initial values: the same statistics of the same (gathered) data
        for name, value in one["initial"].items():
            assert relative(res["initial"][name], value) < 1e-14, (r, name, res["initial"][name], value)
        # (b) 5 Adam steps, same probes: the same hyperparameters and losses to round-off
        for name, value in one["fitted"].items():
            assert relative(res["fitted"][name], value) < 1e-8, (r, name, res["fitted"][name], value)
        assert relative(res["loss"], one["loss"]) < 1e-8, (r, res["loss"], one["loss"])
        # (c) posterior means (eval_tol 1e-10) and exact variances at 7 test points
        assert relative(res["mean"], one["mean"]) < 1e-7, (r, res["mean"], one["mean"])
        assert relative(res["variance"], one["variance"]) < 1e-8, (r, res["variance"], one["variance"])
        assert bool((one["certified"] >= one["variance"] - 1e-12).all())  # the bounds hold above them
        assert relative(res["predictive"], res["variance"] + res["fitted"]["noise"]) < 1e-14  # predict adds the noise
        # every rank bitwise the same
        assert torch.equal(res["loss"], results[0]["loss"]) and torch.equal(res["mean"], results[0]["mean"])
        assert all(torch.equal(res["fitted"][k], results[0]["fitted"][k]) for k in res["fitted"])
    assert not torch.equal(one["fitted"]["noise"], one["initial"]["noise"])  # the fit moved


def test_pivots_kept_across_steps_as_on_one_process(tmp_path):
    """refresh_every=3: the same fresh/reused sequence and pivots as one process's model, and the
    same losses and hyperparameters to round-off."""
    results = spawn(tmp_path, "reuse")
    x, y = w.data(sum(COUNTS))
    one = fg.ExactGP(x, y, mw.kernel(), solver=mw.reuse_solver())
    history = fg.fit(one, iters=mw.ITERS, lr=mw.LR, seed=mw.FIT_SEED, progress=False)
    sources = [d["precond_pivots"] for d in history.diagnostics]
    assert sources == ["greedy", "reused", "reused", "greedy", "reused"]
    for res in results:
        assert res["sources"] == sources
        assert torch.equal(res["pivots"], one.pivot_cache.pivots)
        assert relative(res["loss"], torch.tensor(history.loss)) < 1e-8
        for name, value in mw.values(one).items():
            assert relative(res["fitted"][name], value) < 1e-8, (name, res["fitted"][name], value)


def test_love_posterior_matches_single_process(tmp_path):
    """Above exact_var_max: the sharded Lanczos root gives one process's LOVE means, variances and
    covariance to round-off (the same seeded start, full re-orthogonalization); local_posterior
    at each process's own points equals the single-process LOVE posterior there."""
    results = spawn(tmp_path, "love")
    x, y = w.data(sum(COUNTS))
    one = fg.ExactGP(x, y, mw.kernel(), solver=mw.love_solver())
    with pytest.warns(fg.NumericalWarning, match="Lanczos .LOVE. predictive variances have not converged"):
        post = one.posterior(mw.test_points())
    diagnostics = dict(one.diagnostics)
    assert diagnostics["variance_method"] == "lanczos"
    for r, res in enumerate(results):
        assert res["diagnostics"]["variance_method"] == "lanczos"
        assert abs(res["diagnostics"]["variance_root_change"] - diagnostics["variance_root_change"]) < 1e-8
        assert any("have not converged" in m for m in res["warned"])  # the same warning as one process
        assert relative(res["mean"], post.mean) < 1e-8, (r, res["mean"], post.mean)
        assert relative(res["variance"], post.variance) < 1e-8, (r, res["variance"], post.variance)
        assert relative(res["covariance"], post.covariance.to_dense()) < 1e-8
        mine = mw.test_points(10)[r::len(COUNTS)]  # 5 points each: above exact_var_max, LOVE here too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fg.NumericalWarning)
            local = one.posterior(mine)
        assert one.diagnostics["variance_method"] == "lanczos"
        assert relative(res["local_mean"], local.mean) < 1e-8 and relative(res["local_variance"], local.variance) < 1e-8
    # a Lanczos root's downdate only grows with its rank: LOVE variances lie above the exact ones
    exact = fg.ExactGP(x, y, mw.kernel(), solver=fg.Cholesky()).posterior(mw.test_points()).variance
    assert bool((results[0]["variance"] >= exact - 1e-12).all()) and not torch.allclose(results[0]["variance"], exact)


def test_refusals_under_a_group(tmp_path):
    results = spawn(tmp_path, "errors")
    for res in results:
        kind, message = res["cholesky"]
        assert kind == "TypeError" and "solver" in message and "Cholesky" in message
        kind, message = res["auto"]
        assert kind == "TypeError" and "solver" in message
        kind, message = res["rpcholesky"]
        assert kind == "NotImplementedError" and message.startswith("solver:")


def test_without_a_process_group():
    if dist.is_initialized():
        pytest.skip("a default process group is initialised in this process")
    x, y = w.data(10)
    with pytest.raises(RuntimeError, match="not initialised"):
        ShardedExactGP(x, y, mw.kernel(), solver=mw.solver())
    with pytest.raises(TypeError, match="solver"):  # the solver is checked first
        ShardedExactGP(x, y, mw.kernel(), solver=fg.Cholesky())
