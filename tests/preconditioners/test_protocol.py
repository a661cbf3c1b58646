# Tests for flashgp.preconditioners.base: every built preconditioner implements Preconditioner
# (split, info, spectrum floor), every configuration names the state that serves it, states round
# trip through state_dict (old PivotCache checkpoints included), and CG takes any configuration.
import pytest
import torch

import flashgp as fg
from flashgp.linalg import PivotCache, pivoted_cholesky_preconditioner
from flashgp.operators import LowRankPlusBlockDiag, LowRankPlusDiag
from flashgp.operators.sparse_inverse import SparseInverseCholesky
from flashgp.preconditioners import Preconditioner, PreconditionerConfig, PreconditionerInfo, VecchiaState
from flashgp.serialize import solver_from_config, solver_to_config
from precond_checks import F64, check_against_dense, kernel_op, points

CONFIGS = [fg.PivotedCholesky(10), fg.PivotedCholesky(10, block_size=16), fg.RPCholesky(10),
           fg.Nystrom(10), fg.Vecchia(5)]


def problem(n=80, seed=0):
    return kernel_op(points(n, seed=seed)), torch.full((n,), 0.05, dtype=F64)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{type(c).__name__}")
def test_every_build_is_a_preconditioner_with_its_info(config):
    op, noise = problem()
    state = config.new_state()
    assert isinstance(config, PreconditionerConfig) and state.serves(config)
    precond = config.build(op, noise, state)
    assert isinstance(precond, Preconditioner) and precond.batch_shape == torch.Size([])
    assert precond.shape == (80, 80) and precond.dtype == F64
    info = precond.info()
    assert isinstance(info, PreconditionerInfo) and info.kind == config.kind
    assert isinstance(state.source, str)
    split = isinstance(config, fg.Vecchia)
    assert precond.split == split
    assert info.rank == (0 if split else 10)
    assert info.block_size == getattr(config, "block_size", 0)
    assert info.neighbors == (5 if split else 0)
    assert (info.block_repairs is None) == (not split and info.block_size == 0)
    no_blocks = info.block_size == 0 and not split
    assert (precond.spectrum_floor is not None) == no_blocks
    if split:  # P^{-1} = U^T U
        v = torch.randn(80, 2, dtype=F64)
        torch.testing.assert_close(precond.solve(v), precond.mul_t(precond.mul(v)))
        u = precond.to_dense()
        check_against_dense(precond, torch.linalg.inv(u.T @ u), samples=4000)
    else:
        with pytest.raises(TypeError, match="not split"):
            precond.mul(torch.ones(80, 1, dtype=F64))


def test_states_serve_only_their_configurations():
    states = [config.new_state() for config in CONFIGS]
    for config in CONFIGS:
        served = [state.serves(config) for state in states]
        if isinstance(config, fg.PivotedCholesky):  # both PivotedCholesky states serve both
            assert served == [True, True, False, False, False]
        else:
            assert served == [type(c) is type(config) for c in CONFIGS]


def test_old_pivot_cache_checkpoints_load_through_the_state_interface():
    op, noise = problem(seed=1)
    config = fg.PivotedCholesky(12, max_rank=24)
    old = PivotCache()
    old.preconditioner(op, noise, config)  # what the engine did before the package
    old.record_iterations(80, floor=20, max_rank=24)  # weak: grows the rank
    written = old.state()  # the dict fit checkpoints of earlier versions hold
    assert old.state_dict().keys() == written.keys()
    state = config.new_state()
    state.load_state_dict(written, F64, "cpu")
    assert torch.equal(state.pivots, old.pivots) and state.rank(config) == 24 == old.rank(config)
    config.build(op, noise, state)
    assert state.source == "greedy" and state.pivots.shape == (24,)
    state.load_state_dict({"pivots": torch.zeros(3)}, F64, "cpu")  # unusable: cleared
    assert state.pivots is None and state.source is None and state.state_dict() == {}


def test_vecchia_state_round_trip_and_reuse():
    op, noise = problem(n=120, seed=2)
    config = fg.Vecchia(6, refresh_every=3)
    state = config.new_state()
    first = config.build(op, noise, state)
    assert state.source == "searched" and state.builds == 1
    saved = state.state_dict()
    assert saved["index"].shape == (120, 7) and all(t.device.type == "cpu" for t in saved.values())
    resumed = VecchiaState()
    resumed.load_state_dict(saved, F64, "cpu")
    again = config.build(op, noise, resumed)
    assert resumed.source == "reused" and torch.equal(again.index, first.index)
    config.build(op, noise, resumed, purpose="predict")  # prediction reuses the index too
    assert resumed.source == "reused" and resumed.builds == 3
    config.build(op, noise, resumed)
    assert resumed.source == "searched"
    bad = dict(saved, n=torch.tensor(121))
    resumed.load_state_dict(bad, F64, "cpu")
    assert resumed.index is None and resumed.state_dict() == {}
    legacy = PivotCache()  # engines that keep one PivotCache for every configuration
    legacy.vecchia(op, noise, config)
    legacy.vecchia(op, noise, config)
    assert legacy.source == "reused"


def test_pivoted_cholesky_prediction_build_is_the_fresh_greedy_one():
    op, noise = problem(seed=3)
    config = fg.PivotedCholesky(8, eval_rank=20, block_size=0)
    state = config.new_state()
    config.build(op, noise, state)
    precond = config.build(op, noise, state, purpose="predict")
    expected = pivoted_cholesky_preconditioner(op, noise, 20)
    torch.testing.assert_close(precond.factor, expected.factor, rtol=0, atol=0)
    assert state.pivots.shape == (8,) and precond.info().kind == "pivoted_cholesky"


def test_operators_built_directly_report_their_own_kind():
    p = LowRankPlusDiag(torch.randn(10, 2, dtype=F64), torch.ones(10, dtype=F64))
    assert p.info() == PreconditionerInfo("low_rank", 2, 0, 0, None) and not p.split
    assert issubclass(LowRankPlusBlockDiag, Preconditioner) and issubclass(SparseInverseCholesky, Preconditioner)
    op, noise = problem(seed=4)
    assert pivoted_cholesky_preconditioner(op, noise, 0).info().rank == 0


def test_cg_takes_any_preconditioner_configuration_and_they_serialize():
    for config in CONFIGS + [None]:
        solver = fg.CG(precond=config)
        assert solver_from_config(solver_to_config(solver)) == solver
    with pytest.raises(TypeError, match="precond: expected a preconditioner configuration"):
        fg.CG(precond="rank 10")
    with pytest.raises(TypeError, match="precond"):
        fg.CG(precond=PivotCache())
