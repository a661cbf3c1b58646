# Tests for flashgp.preconditioners.nystrom: the randomized Nystrom approximation (exact at full
# rank, below K up to the shift, seeds), the preconditioner against float64 dense algebra, and
# its configuration fg.Nystrom.
import pytest
import torch

import flashgp as fg
from flashgp.operators import Dense, LowRankPlusDiag
from flashgp.preconditioners import EmptyState, Preconditioner
from flashgp.preconditioners.nystrom import randomized_nystrom
from precond_checks import F64, check_against_dense, dense_k, kernel_op, points, smallest_eigenvalue


def low_rank_matrix(n=80, r=6, batch=(), seed=0):
    w = torch.randn(*batch, n, r, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return w @ w.transpose(-1, -2)


@pytest.mark.parametrize("rank", [6, 10, 80])
def test_exact_when_the_rank_reaches_that_of_k(rank):
    a = low_rank_matrix()
    factor, nu = randomized_nystrom(Dense(a), rank, seed=1)
    assert factor.shape == (80, rank)
    assert float((a - factor @ factor.T).abs().max()) < 1e-10 * float(a.abs().max())
    assert float(nu) < 1e-13 * float(a.norm())


def test_batch_elements_are_each_exact():
    a = low_rank_matrix(batch=(3,), seed=2)
    a[1] = low_rank_matrix(r=3, seed=3)
    factor, nu = randomized_nystrom(Dense(a), 8)
    assert factor.shape == (3, 80, 8) and nu.shape == (3,)
    torch.testing.assert_close(factor @ factor.transpose(-1, -2), a, rtol=0, atol=1e-9)


def test_below_k_up_to_the_shift_and_close_at_moderate_rank():
    op = kernel_op(points(200, seed=4), lengthscale=0.3)
    k = dense_k(op)
    factor, nu = randomized_nystrom(op, 40, seed=0)
    gap = torch.linalg.eigvalsh(k - factor @ factor.T)
    assert float(gap.min()) > -float(nu) - 1e-12 * float(gap.max())
    # the sketch finds the top of the spectrum: the error is within a small factor of the best
    # rank-40 approximation's (the 41st eigenvalue)
    best = float(torch.linalg.eigvalsh(k).flip(0)[40])
    assert float(gap.max()) < 20 * best


def test_a_power_iteration_brings_the_sketch_closer():
    op = kernel_op(points(400, seed=9), lengthscale=0.3)
    k = dense_k(op)
    errors = [float(torch.linalg.eigvalsh(k - f @ f.T).max())
              for f, _ in (randomized_nystrom(op, 40, power_iters=q) for q in (0, 1))]
    assert errors[1] < 0.5 * errors[0]


def test_seeds_are_reproducible_and_differ():
    op = kernel_op(points(120, seed=5))
    first, _ = randomized_nystrom(op, 20, seed=3)
    again, _ = randomized_nystrom(op, 20, seed=3)
    other, _ = randomized_nystrom(op, 20, seed=4)
    assert torch.equal(first, again) and not torch.allclose(first, other)


def test_preconditioner_matches_dense_and_its_spectrum_floor_holds():
    op = kernel_op(points(40, seed=6))
    noise = torch.linspace(0.02, 0.3, 40, dtype=F64)  # heteroscedastic
    precond = fg.Nystrom(rank=12, seed=2).build(op, noise)
    assert isinstance(precond, LowRankPlusDiag) and isinstance(precond, Preconditioner)
    assert precond.rank == 12 and not precond.split
    assert 1 - 1e-10 < precond.spectrum_floor <= 1.0
    check_against_dense(precond, precond.factor @ precond.factor.T + torch.diag(noise))
    k_hat = dense_k(op) + torch.diag(noise)
    assert smallest_eigenvalue(precond, k_hat) >= precond.spectrum_floor - 1e-8
    info = precond.info()
    assert (info.kind, info.rank, info.block_size, info.neighbors, info.block_repairs) == \
        ("nystrom", 12, 0, 0, None)


def test_float32_operator_keeps_an_honest_floor():
    x = points(300, seed=7, dtype=torch.float32)
    op = kernel_op(x, lengthscale=0.5)
    noise = torch.full((300,), 1e-3)
    precond = fg.Nystrom(rank=30).build(op, noise)
    assert precond.factor.dtype == torch.float32 and bool(torch.isfinite(precond.factor).all())
    floor = precond.spectrum_floor
    assert floor is None or 0 < floor <= 1
    k_hat = dense_k(kernel_op(x.double(), lengthscale=0.5)) + 1e-3 * torch.eye(300, dtype=F64)
    eig = smallest_eigenvalue(precond, k_hat)
    assert eig > 0.5 and (floor is None or eig >= floor - 1e-3)


def test_configuration_state_and_prediction_rank():
    config = fg.Nystrom(rank=10, eval_rank=20)
    state = config.new_state()
    assert isinstance(state, EmptyState) and state.serves(config) and not state.serves(fg.RPCholesky())
    op, noise = kernel_op(points(60, seed=8)), torch.full((60,), 0.1, dtype=F64)
    assert config.build(op, noise, state).rank == 10 and state.source == "sketched"
    assert config.build(op, noise, state, purpose="predict").rank == 20
    assert state.state_dict() == {}
    config.record_iterations(state, 50, floor=20)  # nothing to record
    assert fg.Nystrom(rank=0).build(op, noise).rank == 0
    with pytest.raises(TypeError, match="state"):
        config.build(op, noise, fg.PivotedCholesky().new_state())
    with pytest.raises(ValueError, match="rank"):
        fg.Nystrom(rank=-3)
    with pytest.raises(ValueError, match="eval_rank"):
        fg.Nystrom(eval_rank=-1)
    with pytest.raises(TypeError, match="seed"):
        fg.Nystrom(seed="1")
    with pytest.raises(ValueError, match="power_iters"):
        fg.Nystrom(power_iters=-1)


def test_non_finite_products_are_refused():
    bad = torch.full((10, 10), float("nan"), dtype=F64)
    with pytest.raises(ValueError, match="Nystrom"):
        randomized_nystrom(Dense(bad), 3)
