# The worker processes of tests/distributed/test_sharded_model.py: each joins a gloo group through a
# file, builds a ShardedExactGP on its rows, fits it with fg.fit and predicts; saves the results.
import os
from datetime import timedelta

import torch
import torch.distributed as dist

import flashgp as fg
from flashgp.distributed import ShardedExactGP
from flashgp.kernels import Matern, Scale

import sharded_worker as w

TEST_SEED = 19
ITERS, LR, FIT_SEED = 5, 0.05, 0


def solver():
    """The CG solver of both sides (fresh pivots every step on one process too: refresh_every=1)."""
    return fg.CG(reorthogonalize=True, tol=1e-8, probes=16, eval_tol=1e-10,
                 precond=fg.PivotedCholesky(rank=10, refresh_every=1))


def kernel():
    return Scale(Matern(2.5, ard_dims=2))


def test_points(m: int = 7):
    return torch.rand(m, 2, generator=torch.Generator().manual_seed(TEST_SEED), dtype=torch.float64) * 4 - 2


def values(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()} | {
        "noise": model.likelihood.noise.detach().clone(),
        "lengthscale": model.kernel.base.lengthscale.detach().clone(),
        "outputscale": model.kernel.outputscale.detach().clone(),
        "constant": model.mean.constant.detach().clone()}


def love_solver():
    """CG with LOVE variances above 4 test points (a rank-12 root, not converged: it warns)."""
    return fg.CG(reorthogonalize=True, tol=1e-8, eval_tol=1e-10, exact_var_max=4, root_rank=12, variance_tol=None,
                 precond=fg.PivotedCholesky(rank=10, refresh_every=1))


def reuse_solver():
    """Pivots reused for 3 builds (fresh, reused, reused, fresh, ...), as one process's model does."""
    return fg.CG(reorthogonalize=True, tol=1e-8, probes=16, eval_tol=1e-10,
                 precond=fg.PivotedCholesky(rank=10, refresh_every=3))


def worker(rank: int, world: int, init_file: str, counts: list, out_dir: str, mode: str = "fit") -> None:
    """mode "fit": initial values, fg.fit, posterior ("reuse": the same with pivots kept for 3
    steps); "errors": the refusals under a group;
    "love": LOVE posteriors (all processes' test points, and each its own) at the initial values."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=w.TIMEOUT_S))
    try:
        x, y = w.data(sum(counts))
        start = sum(counts[:rank])
        stop = start + counts[rank]
        out = {}
        if mode == "love":
            import warnings
            model = ShardedExactGP(x[start:stop], y[start:stop], kernel(), solver=love_solver())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                post = model.posterior(test_points())
                out["warned"] = [str(c.message) for c in caught]
            out.update(mean=post.mean.clone(), variance=post.variance.clone(),
                       covariance=post.covariance.to_dense().clone(), diagnostics=dict(model.diagnostics))
            mine = test_points(10)[rank::world]  # each process its own test points
            local = model.local_posterior(mine)
            out.update(local_mean=local.mean.clone(), local_variance=local.variance.clone())
        elif mode == "errors":
            for name, bad in (("cholesky", fg.Cholesky()), ("auto", fg.Auto()),
                              ("rpcholesky", fg.CG(precond=fg.RPCholesky(rank=5)))):
                try:
                    ShardedExactGP(x[start:stop], y[start:stop], kernel(), solver=bad)
                except (TypeError, NotImplementedError) as err:
                    out[name] = (type(err).__name__, str(err))
        else:
            model = ShardedExactGP(x[start:stop], y[start:stop], kernel(),
                                   solver=reuse_solver() if mode == "reuse" else solver())
            out["num_train"] = model.num_train
            out["initial"] = values(model)
            history = fg.fit(model, iters=ITERS, lr=LR, seed=FIT_SEED, progress=False)
            out["loss"] = torch.tensor(history.loss)
            out["n_diag"] = history.diagnostics[-1]["n"]
            out["sources"] = [d.get("precond_pivots") for d in history.diagnostics]
            out["pivots"] = model.pivot_cache.pivots.clone()
            out["fitted"] = values(model)
            post = model.posterior(test_points())
            out["mean"] = post.mean.detach().clone()
            out["variance"] = post.variance.detach().clone()
            out["predictive"] = model.predict(test_points()).variance.detach().clone()
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
