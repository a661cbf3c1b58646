# Tests for flashgp.preconditioners.rpcholesky: the sampled pivots (distribution, rejection of
# repeats, seeds, exactness at full rank), the preconditioner against float64 dense algebra, and
# pivot reuse through its PivotCache.
import pytest
import torch

import flashgp as fg
from flashgp.linalg import nystrom_factor
from flashgp.operators import Dense, LowRankPlusBlockDiag, LowRankPlusDiag
from flashgp.preconditioners import Preconditioner
from flashgp.preconditioners.rpcholesky import randomly_pivoted_cholesky
from precond_checks import F64, check_against_dense, dense_k, kernel_op, points, smallest_eigenvalue


def test_first_pivot_is_drawn_in_proportion_to_the_diagonal():
    # K = diag(d): the first pivot has probability d_i / sum(d) (the greedy rule always takes the last)
    d = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    draws = 1000
    counts = torch.zeros(4)
    for seed in range(draws):
        _, pivots, _ = randomly_pivoted_cholesky(Dense(torch.diag(d)), 1, seed=seed)
        counts[pivots[0]] += 1
    expected = draws * d / d.sum()
    std = (expected * (1 - d / d.sum())).sqrt()
    assert bool(((counts - expected).abs() < 5 * std).all()), counts


@pytest.mark.parametrize("candidates", [1, 4, 32])
def test_full_rank_reproduces_k_and_never_repeats_a_point(candidates):
    x = points(60, seed=1)
    x[30:40] = x[:10]  # ten repeated points: K has rank 50
    op = kernel_op(x, lengthscale=0.3)
    info = {}
    factor, pivots, counts = randomly_pivoted_cholesky(op, 60, seed=2, info=info, candidates=candidates)
    k = dense_k(op)
    assert float((k - factor @ factor.T).abs().max()) < 1e-6 * float(k.diagonal().max())
    assert len(set(pivots.tolist())) == pivots.shape[0] == int(counts) <= 50
    assert info["remaining_error"] <= info["stop_threshold"]


def test_seeds_are_reproducible_and_differ():
    op = kernel_op(points(200, seed=3))
    first, pivots, _ = randomly_pivoted_cholesky(op, 25, seed=7)
    again, pivots_again, _ = randomly_pivoted_cholesky(op, 25, seed=7)
    assert torch.equal(pivots, pivots_again) and torch.equal(first, again)
    _, other, _ = randomly_pivoted_cholesky(op, 25, seed=8)
    assert not torch.equal(pivots, other)


def test_factor_is_a_nystrom_factor_below_k():
    # K - L L^T is PSD, and L L^T equals the Nystrom approximation at the pivots
    op = kernel_op(points(150, seed=4))
    factor, pivots, _ = randomly_pivoted_cholesky(op, 30, seed=0)
    k = dense_k(op)
    gap = k - factor @ factor.T
    assert float(torch.linalg.eigvalsh(gap).min()) > -1e-10
    rebuilt = nystrom_factor(op, pivots)
    torch.testing.assert_close(rebuilt @ rebuilt.T, factor @ factor.T, rtol=0, atol=1e-10)


def test_batch_elements_draw_their_own_pivots_and_stop_early():
    w = torch.randn(2, 80, 6, dtype=F64, generator=torch.Generator().manual_seed(5))
    w[1, :, 4:] = 0  # the second element has rank 4
    a = w @ w.transpose(-1, -2)
    factor, pivots, counts = randomly_pivoted_cholesky(Dense(a), 20, seed=1)
    assert counts.tolist() == [6, 4] and factor.shape == (2, 80, 6)
    assert float(factor[1, :, 4:].abs().max()) == 0.0
    torch.testing.assert_close(factor @ factor.transpose(-1, -2), a, rtol=0, atol=1e-9)
    x = points(120, seed=6, batch=(3,))
    op = kernel_op(x)
    factor, pivots, counts = randomly_pivoted_cholesky(op, 40, seed=0)
    assert counts.tolist() == [40, 40, 40] and pivots.shape == (3, 40)
    assert float(torch.linalg.eigvalsh(dense_k(op) - factor @ factor.transpose(-1, -2)).min()) > -1e-10


def test_preconditioner_matches_dense_and_its_spectrum_floor_holds():
    x = points(40, seed=7)
    op = kernel_op(x)
    noise = torch.linspace(0.05, 0.2, 40, dtype=F64)  # heteroscedastic
    precond = fg.RPCholesky(rank=12, seed=3).build(op, noise)
    assert isinstance(precond, LowRankPlusDiag) and isinstance(precond, Preconditioner)
    assert precond.rank == 12 and precond.spectrum_floor == 1.0 and not precond.split
    expected = precond.factor @ precond.factor.T + torch.diag(noise)
    check_against_dense(precond, expected)
    k_hat = dense_k(op) + torch.diag(noise)
    assert smallest_eigenvalue(precond, k_hat) >= precond.spectrum_floor - 1e-8
    info = precond.info()
    assert (info.kind, info.rank, info.block_size, info.neighbors, info.block_repairs) == \
        ("rpcholesky", 12, 0, 0, None)


def test_pivots_are_reused_then_sampled_afresh():
    config = fg.RPCholesky(rank=15, refresh_every=2, seed=1)
    state = config.new_state()
    assert state.serves(config) and not state.serves(fg.PivotedCholesky(15))
    sources = []
    for step in range(5):
        op = kernel_op(points(100, seed=8), lengthscale=0.2 + 0.01 * step)
        precond = config.build(op, torch.full((100,), 0.1, dtype=F64), state)
        config.record_iterations(state, 10, floor=20)
        sources.append(state.source)
        torch.testing.assert_close(precond.factor, nystrom_factor(op, state.pivots), rtol=0, atol=1e-12)
    assert sources == ["sampled", "reused", "sampled", "reused", "sampled"]
    saved = state.state_dict()
    loaded = config.new_state()
    loaded.load_state_dict(saved, F64, "cpu")
    assert torch.equal(loaded.pivots, state.pivots) and loaded.builds == state.builds


def test_prediction_uses_eval_rank_and_leaves_the_state_alone():
    config = fg.RPCholesky(rank=10, eval_rank=25)
    state = config.new_state()
    op, noise = kernel_op(points(90, seed=9)), torch.full((90,), 0.1, dtype=F64)
    config.build(op, noise, state)
    pivots = state.pivots.clone()
    precond = config.build(op, noise, state, purpose="predict")
    assert precond.rank == 25 and torch.equal(state.pivots, pivots) and state.source == "sampled"


def test_blocks_and_validation():
    op = kernel_op(points(100, seed=10))
    precond = fg.RPCholesky(rank=8, block_size=16).build(op, torch.full((100,), 0.01, dtype=F64))
    assert isinstance(precond, LowRankPlusBlockDiag) and precond.info().kind == "rpcholesky"
    assert precond.info().block_size == 16 and precond.info().block_repairs is not None
    with pytest.raises(ValueError, match="rank"):
        fg.RPCholesky(rank=-1)
    with pytest.raises(ValueError, match="seed"):
        fg.RPCholesky(seed=-2)
    with pytest.raises(ValueError, match="max_rank"):
        fg.RPCholesky(rank=10, max_rank=5)
    with pytest.raises(TypeError, match="refresh_every"):
        fg.RPCholesky(refresh_every=1.5)
    with pytest.raises(ValueError, match="purpose"):
        fg.RPCholesky().build(op, torch.full((100,), 0.01, dtype=F64), purpose="test")
