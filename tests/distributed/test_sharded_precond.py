# The sharded pivoted-Cholesky preconditioner (flashgp.distributed.precond) on 2 gloo processes with
# uneven rows (spawned here, CPU, float64): the pivots are the single-process greedy pivots, the
# factor rows, log det, solves and N(0, P) samples those of the single-process LowRankPlusDiag,
# and sharded_mll(precond=fg.PivotedCholesky(rank=k)) gives the value and gradients of exact_mll
# with fg.CG(precond=fg.PivotedCholesky(rank=k)) and the same probes, in fewer CG iterations than
# without a preconditioner; the same on 3 processes (20/31/13 rows); in a group of one the
# preconditioner contract and batched kernels. Also the errors for preconditioners that are not
# supported sharded. The whole file runs in about 10 s on 2 cores.
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flashgp as fg
from flashgp.distributed import sharded_mll
from flashgp.distributed.precond import check_config
from flashgp.linalg.inv_quad_logdet import inv_quad_logdet
from flashgp.objectives import exact_mll
from flashgp.operators import KernelOperator
from flashgp.preconditioners.pivoted_cholesky import pivoted_cholesky_with_pivots

import sharded_worker as w

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

F64 = torch.float64
ROUNDOFF = 1e-10  # relative agreement with the single-process path (float64)
COUNTS = (37, 27)  # uneven rows on 2 processes
RANKS = (10, 30)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def single_process(n: int, k: int):
    """The single-process preconditioner's parts and exact_mll with fg.PivotedCholesky(rank=k)."""
    x, y = w.data(n)
    kernel, mean, likelihood = w.parts()
    op = KernelOperator(kernel, x)
    factor, pivots, _ = pivoted_cholesky_with_pivots(op, k)
    precond = fg.PivotedCholesky(rank=k).build(op, likelihood.noise_diag(n).detach())
    rhs = torch.randn(n, 3, generator=torch.Generator().manual_seed(11), dtype=F64)
    built = {"pivots": pivots, "factor": factor, "logdet": precond.logdet(), "solve": precond.solve(rhs),
             "samples": precond.sample(4, generator=torch.Generator().manual_seed(5))}
    engine = fg.CG(precond=fg.PivotedCholesky(rank=k), **w.SETTINGS).engine()
    value, info = exact_mll(engine, kernel, mean, likelihood, x, y,
                            generator=torch.Generator().manual_seed(w.PROBE_SEED))
    value.backward()
    return built, value.detach(), w.gradients(kernel, mean, likelihood), info


def test_two_ranks_pivoted_cholesky_matches_single_process(tmp_path):
    init = tmp_path / "init"
    mp.spawn(w.precond_worker, args=(2, str(init), list(COUNTS), str(tmp_path), list(RANKS), w.SETTINGS),
             nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    n = sum(COUNTS)
    starts = [0, COUNTS[0], n]
    iterations = {}
    for k in RANKS:
        built, value, grads, info = single_process(n, k)
        assert info.solve.converged
        iterations[k] = info.solve.iterations
        for r, res in enumerate(results):
            mine, rows = res[k], slice(starts[r], starts[r + 1])
            # the same greedy pivots, over all n rows, on every process
            assert torch.equal(mine["built"]["pivots"], built["pivots"]), (k, r)
            assert mine["built"]["factor"].shape == (COUNTS[r], k)
            assert relative(mine["built"]["factor"], built["factor"][rows]) < ROUNDOFF
            assert relative(mine["built"]["logdet"], built["logdet"]) < ROUNDOFF
            assert relative(mine["built"]["solve"], built["solve"][rows]) < ROUNDOFF
            assert relative(mine["built"]["samples"], built["samples"][rows]) < ROUNDOFF
            # the mll and every gradient
            assert mine["info"]["converged"] and mine["info"]["precond_rank"] == k
            assert mine["info"]["iterations"] == info.solve.iterations
            assert relative(mine["value"], value) < ROUNDOFF, (k, r, float(mine["value"]), float(value))
            assert set(mine["grads"]) == set(grads)
            for name, g in grads.items():
                assert relative(mine["grads"][name], g) < ROUNDOFF, (k, r, name, mine["grads"][name], g)
                assert torch.equal(mine["grads"][name], results[0][k]["grads"][name])
            assert torch.equal(mine["value"], results[0][k]["value"])
        # the pivots come from both processes' rows; the first is a tie of all n rows (a stationary
        # kernel's constant diagonal), which goes to the lowest global index, as torch.argmax does
        assert bool((built["pivots"] < COUNTS[0]).any()) and bool((built["pivots"] >= COUNTS[0]).any())
        assert int(built["pivots"][0]) == 0
    # the preconditioner pays: fewer CG iterations than without one (measured: 35 without,
    # 25 at rank 10, 20 at rank 30, where CG's minimum, lanczos_iters, is 20)
    plain = results[0]["plain_iterations"]
    assert results[1]["plain_iterations"] == plain
    assert iterations[RANKS[0]] < plain and iterations[RANKS[1]] <= iterations[RANKS[0]], (plain, iterations)


def test_one_process_group_with_precond_is_the_single_process_path(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        x, y = w.data(40)
        kernel, mean, likelihood = w.parts()
        value, info = sharded_mll(kernel, mean, likelihood, x, y, generator=torch.Generator().manual_seed(w.PROBE_SEED),
                                  precond=fg.PivotedCholesky(rank=8), **w.SETTINGS)
        value.backward()
        grads = w.gradients(kernel, mean, likelihood)
        # rank 0 gives P = noise; more columns than rows stop at n
        zero, _ = sharded_mll(*w.parts(), x, y, generator=torch.Generator().manual_seed(w.PROBE_SEED),
                              precond=fg.PivotedCholesky(rank=0), **w.SETTINGS)
        full, full_info = sharded_mll(*w.parts(), x[:6], y[:6], precond=fg.PivotedCholesky(rank=50),
                                      generator=torch.Generator().manual_seed(w.PROBE_SEED), **w.SETTINGS)
    finally:
        dist.destroy_process_group()
    built, expected, expected_grads, _ = single_process(40, 8)
    assert torch.equal(info["pivots"], built["pivots"])
    assert relative(value.detach(), expected) < ROUNDOFF
    for name, g in expected_grads.items():
        assert relative(grads[name], g) < ROUNDOFF, (name, grads[name], g)
    x6, y6 = w.data(40)
    for got, config, xs, ys in ((zero, fg.PivotedCholesky(rank=0), x, y),
                                (full, fg.PivotedCholesky(rank=50), x6[:6], y6[:6])):
        want, _ = exact_mll(fg.CG(precond=config, **w.SETTINGS).engine(), *w.parts(), xs, ys,
                            generator=torch.Generator().manual_seed(w.PROBE_SEED))
        assert relative(got.detach(), want.detach()) < ROUNDOFF
    assert full_info["precond_rank"] <= 6


def test_unsupported_preconditioners_raise_naming_what_is_supported():
    for config in (fg.RPCholesky(rank=8), fg.Vecchia(neighbors=4), fg.Nystrom(rank=8),
                   fg.PivotedCholesky(rank=8, block_size=4)):
        with pytest.raises(NotImplementedError, match="PivotedCholesky"):
            check_config(config)
    # before any collective: no process group is needed to get the error
    with pytest.raises(NotImplementedError, match="PivotedCholesky"):
        sharded_mll(*w.parts(), *w.data(10), precond=fg.Vecchia(neighbors=4))
    # inv_quad_logdet with sharded rows refuses a preconditioner that holds all rows
    op = fg.operators.Dense(torch.eye(4, dtype=F64) * 2)
    precond = fg.PivotedCholesky(rank=2).build(KernelOperator(w.parts()[0], w.data(4)[0]),
                                               torch.full((4,), 0.1, dtype=F64))
    with pytest.raises(NotImplementedError, match="sharded on the same rows"):
        inv_quad_logdet(op, torch.ones(4, dtype=F64), precond, row_sum=lambda s: s, rows=(0, 4, 4))


def test_one_process_group_contract_and_batched_pivots(tmp_path):
    """In a group of one the sharded preconditioner is a whole one: it passes the preconditioner
    contract (solves, log det, sample covariance, spectrum floor against the dense K_hat), and a
    batched kernel gets the single-process pivots of each batch element."""
    from flashgp.distributed import Shards, ShardedKernelOperator, sharded_preconditioner
    from flashgp.kernels import Matern, Scale
    from flashgp.testing import check_preconditioner

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        x, _ = w.data(50)
        kernel, _, likelihood = w.parts()
        shards = Shards(50)
        noise = likelihood.noise_diag(50).detach()
        precond = sharded_preconditioner(fg.PivotedCholesky(rank=8), ShardedKernelOperator(kernel, x, shards, x),
                                         noise)
        with torch.no_grad():
            k_hat = kernel(x, x) + torch.diag_embed(noise)
        check_preconditioner(precond, k_hat)
        assert precond.info().kind == "pivoted_cholesky" and precond.info().rank == 8
        batched = Scale(Matern(2.5, ard_dims=2, batch_shape=(2,))).to(F64)
        with torch.no_grad():
            batched.base.lengthscale = torch.tensor([[[0.7, 1.3]], [[0.3, 0.5]]], dtype=F64)
        info = {}
        built = sharded_preconditioner(fg.PivotedCholesky(rank=8), ShardedKernelOperator(batched, x, shards, x),
                                       noise, info)
    finally:
        dist.destroy_process_group()
    factor, pivots, _ = pivoted_cholesky_with_pivots(KernelOperator(batched, x), 8)
    assert torch.equal(info["pivots"], pivots) and not torch.equal(pivots[0], pivots[1])
    assert relative(built.factor, factor) < ROUNDOFF


def test_three_ranks_pivoted_cholesky_matches_single_process(tmp_path):
    counts, k = (20, 31, 13), 12
    init = tmp_path / "init"
    mp.spawn(w.precond_worker, args=(3, str(init), list(counts), str(tmp_path), [k], w.SETTINGS),
             nprocs=3, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(3)]
    built, value, grads, info = single_process(sum(counts), k)
    for r, res in enumerate(results):
        assert torch.equal(res[k]["built"]["pivots"], built["pivots"])
        assert res[k]["info"]["iterations"] == info.solve.iterations
        assert relative(res[k]["built"]["logdet"], built["logdet"]) < ROUNDOFF
        assert relative(res[k]["value"], value) < ROUNDOFF
        for name, g in grads.items():
            assert relative(res[k]["grads"][name], g) < ROUNDOFF, (r, name)
