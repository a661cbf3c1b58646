# Tests for flashgp.linalg.pivot_cache: when PivotCache reuses pivots and when it chooses new ones
# (refresh_every, stale CG iterations, other operators, failed rebuilds), and its state round trip.
import pytest
import torch

import flashgp as fg
from flashgp.linalg import PivotCache, nystrom_factor, pivoted_cholesky
from flashgp.linalg.pivot_cache import GROW_FLOOR, STALE_GROWTH, STALE_SLACK
from flashgp.operators.dense import Dense

F64 = torch.float64


def rbf_matrix(n=80, lengthscale=0.3, seed=0, batch=(), dtype=F64):
    x = torch.rand(*batch, n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return torch.exp(-0.5 * torch.cdist(x, x).square() / lengthscale**2).to(dtype)


def build(cache, matrix, config, noise=0.1):
    noise = torch.full(matrix.shape[:-1], noise, dtype=matrix.dtype)
    return cache.preconditioner(Dense(matrix), noise, config)


def test_pivots_are_reused_for_refresh_every_builds():
    cache, config = PivotCache(), fg.PivotedCholesky(rank=15, refresh_every=3)
    sources = []
    for step in range(7):
        a = rbf_matrix(lengthscale=0.3 + 0.01 * step)  # slowly changing hyperparameters
        precond = build(cache, a, config)
        sources.append(cache.source)
        cache.record_iterations(10)
        expected = nystrom_factor(Dense(a), cache.pivots)
        torch.testing.assert_close(precond.factor, expected, rtol=0, atol=1e-12)
        assert precond.rank == 15 and torch.equal(precond.diag, torch.full((80,), 0.1, dtype=F64))
    assert sources == ["greedy", "reused", "reused", "greedy", "reused", "reused", "greedy"]
    # refresh_every=1: a greedy factor every time (the behaviour without reuse)
    cache, config = PivotCache(), fg.PivotedCholesky(rank=15, refresh_every=1)
    for _ in range(3):
        precond = build(cache, rbf_matrix(), config)
        assert cache.source == "greedy"
        assert torch.equal(precond.factor, pivoted_cholesky(Dense(rbf_matrix()), 15))


def test_growing_cg_iterations_make_the_pivots_stale():
    cache, config = PivotCache(), fg.PivotedCholesky(rank=10, refresh_every=100)
    build(cache, rbf_matrix(), config)
    cache.record_iterations(20)  # the solve with the greedy factor: the baseline
    limit = int(STALE_GROWTH * 20 + STALE_SLACK)
    build(cache, rbf_matrix(), config)
    cache.record_iterations(limit)  # not beyond the limit: still fresh
    build(cache, rbf_matrix(), config)
    assert cache.source == "reused"
    cache.record_iterations(limit + 1)
    assert cache.stale
    build(cache, rbf_matrix(), config)
    assert cache.source == "greedy" and not cache.stale and cache.base_iterations is None


@pytest.mark.parametrize("change", ["n", "batch", "dtype", "rank"])
def test_another_operator_gets_fresh_pivots(change):
    cache, config = PivotCache(), fg.PivotedCholesky(rank=10)
    build(cache, rbf_matrix(), config)
    other = {"n": lambda: (rbf_matrix(n=90), config), "batch": lambda: (rbf_matrix(batch=(2,)), config),
             "dtype": lambda: (rbf_matrix(dtype=torch.float32), config),
             "rank": lambda: (rbf_matrix(), fg.PivotedCholesky(rank=12))}[change]
    matrix, new_config = other()
    precond = build(cache, matrix, new_config)
    assert cache.source == "greedy" and precond.dtype == matrix.dtype
    assert cache.pivots.shape == (*matrix.shape[:-2], new_config.rank)


def test_a_failed_rebuild_falls_back_to_greedy_pivots():
    cache, config = PivotCache(), fg.PivotedCholesky(rank=10)
    build(cache, rbf_matrix(), config)
    nan = torch.full((80, 80), float("nan"), dtype=F64)
    build(cache, nan, config)  # K[P, P] cannot be factored: greedy (whatever that makes of NaN)
    assert cache.source == "greedy"


def test_rank_zero_has_no_pivots():
    cache = PivotCache()
    precond = build(cache, rbf_matrix(), fg.PivotedCholesky(rank=0))
    assert precond.rank == 0 and cache.source is None and cache.pivots is None


def test_batch_elements_that_stopped_early_keep_their_counts():
    w = torch.randn(80, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    a = torch.stack([w @ w.T, rbf_matrix()])
    cache, config = PivotCache(), fg.PivotedCholesky(rank=12)
    greedy = build(cache, a, config).factor
    assert cache.counts.tolist() == [3, 12]
    reused = build(cache, a, config).factor
    assert cache.source == "reused"
    torch.testing.assert_close(reused @ reused.mT, greedy @ greedy.mT, rtol=0, atol=1e-10)
    assert bool((reused[0, :, 3:] == 0).all())


def test_state_round_trip_and_bad_states_clear_the_cache():
    w = torch.randn(80, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    a = torch.stack([w @ w.T, rbf_matrix()])
    cache, config = PivotCache(), fg.PivotedCholesky(rank=12, refresh_every=5)
    build(cache, a, config)
    cache.record_iterations(7)
    build(cache, a, config)
    state = cache.state()
    assert all(t.device.type == "cpu" and t.dtype == torch.long for t in state.values())
    again = PivotCache()
    again.load_state(state, F64, torch.device("cpu"))
    for name in ("key", "builds", "base_iterations", "stale"):
        assert getattr(again, name) == getattr(cache, name), name
    assert torch.equal(again.pivots, cache.pivots) and torch.equal(again.counts, cache.counts)
    build(again, a, config)
    assert again.source == "reused" and again.builds == 3
    assert PivotCache().state() == {}
    for bad in ({}, {**state, "pivots": state["pivots"] + 80}, {**state, "extra": torch.tensor(1)},
                {**state, "counts": state["counts"][:1]}, {**state, "builds": torch.tensor(1.0)}):
        again.load_state(bad, F64, torch.device("cpu"))
        assert again.pivots is None and again.key is None


def test_max_rank_grows_the_rank_after_a_weak_fresh_factor():
    cache, config = PivotCache(), fg.PivotedCholesky(rank=5, refresh_every=100, max_rank=12)
    a = rbf_matrix(lengthscale=0.15)  # far from rank 12: every greedy run uses all its columns
    limit = int(STALE_GROWTH * 20 + STALE_SLACK)  # floor 20 (CG.lanczos_iters)
    ranks = []
    for _ in range(5):
        precond = build(cache, a, config)
        ranks.append((precond.rank, cache.source))
        cache.record_iterations(limit + 1, floor=20, max_rank=config.max_rank)
    # 5 -> 10 -> 12 (capped), each grown rank chosen by a greedy run; then no more growth
    assert ranks == [(5, "greedy"), (10, "greedy"), (12, "greedy"), (12, "reused"), (12, "reused")]
    torch.testing.assert_close(build(cache, a, config).factor, pivoted_cholesky(Dense(a), 12))
    # a fresh factor within the limit, or a reused one far above it, does not grow the rank
    cache, config = PivotCache(), fg.PivotedCholesky(rank=5, refresh_every=100, max_rank=40)
    build(cache, a, config)
    cache.record_iterations(limit, floor=20, max_rank=config.max_rank)
    build(cache, a, config)
    cache.record_iterations(1000, floor=20, max_rank=config.max_rank)  # stale: fresh pivots next
    assert build(cache, a, config).rank == 5 and cache.source == "greedy"
    # the CG minimum counts as at least GROW_FLOOR iterations (no log det: floor 0)
    cache.record_iterations(int(STALE_GROWTH * GROW_FLOOR + STALE_SLACK), floor=0, max_rank=40)
    assert build(cache, a, config).rank == 5
    # without max_rank the rank is fixed whatever the iterations
    cache, config = PivotCache(), fg.PivotedCholesky(rank=5, refresh_every=1)
    for _ in range(3):
        assert build(cache, a, config).rank == 5
        cache.record_iterations(1000, floor=20, max_rank=config.max_rank)


def test_a_greedy_run_that_stopped_early_does_not_grow():
    w = torch.randn(80, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    cache, config = PivotCache(), fg.PivotedCholesky(rank=6, refresh_every=1, max_rank=24)
    assert build(cache, w @ w.T, config).rank == 3  # rank 3: exact after 3 pivots
    cache.record_iterations(1000, floor=20, max_rank=config.max_rank)
    assert cache.grown_rank is None and build(cache, w @ w.T, config).rank == 3


def test_grown_rank_survives_the_state_round_trip():
    a = rbf_matrix(lengthscale=0.15)
    cache, config = PivotCache(), fg.PivotedCholesky(rank=4, refresh_every=100, max_rank=16)
    build(cache, a, config)
    cache.record_iterations(1000, floor=20, max_rank=config.max_rank)  # grows to 8 at the next build
    again = PivotCache()
    again.load_state(cache.state(), F64, torch.device("cpu"))
    assert again.grown_rank == 8 and again.stale
    assert build(again, a, config).rank == 8 and again.source == "greedy"
    # a config without max_rank ignores a grown rank; a bad grown_rank clears the cache
    assert build(PivotCache(), a, fg.PivotedCholesky(rank=4)).rank == 4
    again.load_state({**cache.state(), "grown_rank": torch.tensor(0)}, F64, torch.device("cpu"))
    assert again.pivots is None


def test_max_rank_is_checked():
    with pytest.raises(ValueError, match="max_rank"):
        fg.PivotedCholesky(rank=10, max_rank=5)
    with pytest.raises(TypeError, match="max_rank"):
        fg.PivotedCholesky(rank=10, max_rank=20.5)
    assert fg.PivotedCholesky(rank=10, max_rank=10).max_rank == 10
