# flashgp.distributed.sharded_mll on 2 and 3 gloo processes (spawned here, CPU, float64): every rank's
# value and gradients equal the single-process exact_mll through fg.CG(precond=None) with the same
# probes to round-off, and the dense Cholesky mll to the CG and SLQ accuracy; a rank that dies makes
# the run fail with an error instead of hanging. Also mbcg's row_sum with two shards in one process.
# The whole file, slow cases included (-m ""), runs in about 45 s on 2 cores; without them about 27 s.
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flashgp as fg
from flashgp.distributed import sharded_mll
from flashgp.linalg import mbcg
from flashgp.linalg.inv_quad_logdet import inv_quad_logdet
from flashgp.objectives import exact_mll

import sharded_worker as w

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

F64 = torch.float64
ROUNDOFF = 1e-10  # relative agreement with the single-process CG path (float64)


def single_process(n: int, settings: dict = w.SETTINGS):
    """(value, gradients by name, info) of exact_mll on all n rows, CG without a preconditioner."""
    x, y = w.data(n)
    kernel, mean, likelihood = w.parts()
    engine = fg.CG(precond=None, **settings).engine()
    value, info = exact_mll(engine, kernel, mean, likelihood, x, y,
                            generator=torch.Generator().manual_seed(w.PROBE_SEED))
    value.backward()
    return value.detach(), w.gradients(kernel, mean, likelihood), info


def cholesky_mll(n: int):
    """(value, gradients by name) of the exact mll per point by a dense Cholesky factor."""
    x, y = w.data(n)
    kernel, mean, likelihood = w.parts()
    value, _ = exact_mll(fg.Cholesky().engine(), kernel, mean, likelihood, x, y)
    value.backward()
    return value.detach(), w.gradients(kernel, mean, likelihood)


def spawn(tmp_path, counts, mode="ok", settings=w.SETTINGS):
    """Run the worker on len(counts) gloo processes; returns every rank's saved results."""
    init = tmp_path / "init"
    mp.spawn(w.worker, args=(len(counts), str(init), list(counts), str(tmp_path), mode, settings),
             nprocs=len(counts), join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(len(counts))]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check_agreement(results, n, settings=w.SETTINGS):
    """Every rank's value and gradients equal the single-process CG run's to round-off and each other's bitwise."""
    value, grads, info = single_process(n, settings)
    assert info.solve.converged
    for r, res in enumerate(results):
        assert res["info"]["rank"] == r and res["info"]["n"] == n and res["info"]["world_size"] == len(results)
        assert res["info"]["converged"], res["info"]
        assert relative(res["value"], value) < ROUNDOFF, (r, float(res["value"]), float(value))
        assert set(res["grads"]) == set(grads)
        for name, g in grads.items():
            assert relative(res["grads"][name], g) < ROUNDOFF, (r, name, res["grads"][name], g)
        # bitwise the same on every rank: the collectives hand every process the same sums
        assert torch.equal(res["value"], results[0]["value"])
        assert all(torch.equal(res["grads"][k], results[0]["grads"][k]) for k in grads)
    assert results[0]["info"]["iterations"] == info.solve.iterations


def test_two_ranks_match_single_process(tmp_path):
    results = spawn(tmp_path, (31, 29))
    check_agreement(results, 60)
    # against the dense Cholesky mll: the mean's gradient, 1^T K_hat^{-1} (y - m), is the solve's
    # alone (CG tol 1e-6); the value and the other gradients carry the 8-probe SLQ estimate
    exact, exact_grads = cholesky_mll(60)
    assert relative(results[0]["grads"]["mean.raw_constant"], exact_grads["mean.raw_constant"]) < 1e-5
    assert abs(float(results[0]["value"] - exact)) < 0.1


@pytest.mark.slow  # (about 9 s: 3 processes on 2 cores / the 5 s timeout)
def test_three_ranks_match_single_process_and_cholesky(tmp_path):
    # 256 probes: the SLQ log determinant close enough to compare with Cholesky (measured: value
    # within 0.002 per point, gradients within 2%); the blocked backend for the local products
    settings = dict(w.SETTINGS, probes=256, backend="blocked")
    results = spawn(tmp_path, (25, 31, 27), settings=settings)
    check_agreement(results, 83, settings)
    exact, exact_grads = cholesky_mll(83)
    assert abs(float(results[0]["value"] - exact)) < 0.01
    for name, g in exact_grads.items():
        assert relative(results[0]["grads"][name], g) < 0.05, (name, results[0]["grads"][name], g)


def test_rank_that_raises_fails_the_run(tmp_path):
    start = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 failed on purpose"):
        spawn(tmp_path, (31, 29), mode="raise")
    assert time.perf_counter() - start < 60


def test_rank_that_leaves_makes_the_others_fail_within_the_timeout(tmp_path):
    # rank 1 joins the group and returns without taking part: spawn sees no failure, so rank 0
    # must end on its own, by an error of its first collective (closed connection or timeout)
    start = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="ShardError|rank 0 of 2"):
        spawn(tmp_path, (31, 29), mode="leave")
    assert time.perf_counter() - start < 3 * w.TIMEOUT_S


@pytest.mark.slow  # (about 9 s: 3 processes on 2 cores / the 5 s timeout)
def test_rank_that_stalls_makes_the_others_fail_by_the_timeout(tmp_path):
    # rank 1 joins and then sleeps past the group's timeout without taking part: rank 0's first
    # collective must give up after the timeout (a ShardError), not wait for it
    start = time.perf_counter()
    with pytest.raises(mp.ProcessRaisedException, match="ShardError"):
        spawn(tmp_path, (31, 29), mode="stall")
    assert time.perf_counter() - start < 4 * w.STALL_TIMEOUT_S


def test_two_ranks_plain_cg_default_settings(tmp_path):
    """fg.CG()'s settings (tol 1, 10 probes, no re-orthogonalization): once plain CG has lost
    orthogonality its iterates amplify round-off (a 1e-15 change of the products moved the solution
    by 1e-10 after 10 iterations and by 1e-2 after 20, on one process: see flashgp.distributed), so
    the differently ordered sums agree only to the CG error itself (measured: value 4e-4 relative
    with 31/29 rows, 9e-4 with these 51/9, gradients up to 8e-3, the same 20 iterations); every
    rank still returns the same numbers."""
    settings = dict(probes=10, tol=1.0, max_iters=1000, lanczos_iters=20)
    results = spawn(tmp_path, (51, 9), settings=settings)  # very uneven blocks
    value, grads, info = single_process(60, settings)
    for res in results:
        assert res["info"]["iterations"] == info.solve.iterations
        assert torch.equal(res["value"], results[0]["value"])
        assert relative(res["value"], value) < 2e-3
        for name, g in grads.items():
            assert torch.equal(res["grads"][name], results[0]["grads"][name])
            assert relative(res["grads"][name], g) < 3e-2, (name, res["grads"][name], g)


def test_one_process_group_is_the_single_process_path(tmp_path):
    """A group of one: the same sums in the same order, so bitwise the single-process value; the
    gradients differ in the last bits (the cross operator K(x, x_all) sums its bilinear gradient
    in another order than the symmetric K(x, x))."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        x, y = w.data(40)
        kernel, mean, likelihood = w.parts()
        value, info = sharded_mll(kernel, mean, likelihood, x, y, generator=torch.Generator().manual_seed(w.PROBE_SEED),
                                  **w.SETTINGS)
        value.backward()
        grads = w.gradients(kernel, mean, likelihood)
    finally:
        dist.destroy_process_group()
    expected, expected_grads, _ = single_process(40)
    assert info["world_size"] == 1 and info["n"] == 40
    assert torch.equal(value.detach(), expected)
    for name, g in expected_grads.items():
        assert relative(grads[name], g) < 1e-13, (name, grads[name], g)


def test_errors_without_a_group_and_for_bad_arguments():
    kernel, mean, likelihood = w.parts()
    x, y = w.data(10)
    with pytest.raises(RuntimeError, match="init_process_group"):
        sharded_mll(kernel, mean, likelihood, x, y)
    with pytest.raises(ValueError, match="x_local, y_local"):
        sharded_mll(kernel, mean, likelihood, x, y[:5])
    op = fg.operators.Dense(torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="row_sum and rows"):
        inv_quad_logdet(op, torch.ones(3, dtype=F64), row_sum=lambda s: s)


def test_mbcg_row_sum_two_shards_in_one_process():
    """mbcg on the two row blocks of one system, run in lock step with row_sum adding the blocks'
    partial sums, gives the single-block run's solution and tridiagonals."""
    g = torch.Generator().manual_seed(0)
    n, t, cut = 50, 3, 23
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=g))
    a = (q * torch.logspace(-1, 2, n, dtype=F64)) @ q.T
    rhs = torch.randn(n, t, dtype=F64, generator=g)
    full = mbcg(lambda v: a @ v, rhs, tol=1e-9, max_iters=200, n_tridiag=2, reorthogonalize=True)

    # the two shards as one batch of 2 "processes": rows padded to a common count, the padding
    # kept at zero; row_sum adds the two processes' partial sums (the all-reduce)
    rows = [slice(0, cut), slice(cut, n)]
    most = max(cut, n - cut)

    def split(v):
        out = v.new_zeros(2, most, v.shape[-1])
        for i, s in enumerate(rows):
            out[i, : s.stop - s.start] = v[s]
        return out

    def join(v):
        return torch.cat([v[i, : s.stop - s.start] for i, s in enumerate(rows)])

    def row_sum(partial):
        return partial.sum(0, keepdim=True).expand_as(partial).clone()

    sharded = mbcg(lambda v: split(a @ join(v)), split(rhs), tol=1e-9, max_iters=200, n_tridiag=2,
                   reorthogonalize=True, row_sum=row_sum)
    assert sharded.iterations == full.iterations
    assert relative(join(sharded.solution), full.solution) < 1e-10
    assert relative(sharded.tridiag[0], full.tridiag) < 1e-10
    assert torch.equal(sharded.tridiag[0], sharded.tridiag[1])
    assert relative(sharded.init_norm_sq[0], full.init_norm_sq) < 1e-12
