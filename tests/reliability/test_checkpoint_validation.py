# A damaged checkpoint is refused before a resume uses it: optimizer moments of the wrong shape or
# NaN, a missing or broken random state, a missing or NaN parameter, a solver state of another
# kind, a NaN loss history, a broken L-BFGS state: each a ModelFileError naming the file and what is
# wrong (never a KeyError or RuntimeError), with the model left as it was.
import io
import json
import re
import zipfile

import pytest
import torch

import flashgp as fg
from flashgp.checkpoint import read_checkpoint
from flashgp.kernels import RBF, Scale

F64 = torch.float64
RAW = "kernel.base.raw_lengthscale"  # a parameter of every model here
FIRST = "kernel.raw_outputscale"  # the first one, under which L-BFGS keeps its state
ADAM = dict(optimizer="adam", lr=0.1, seed=7)
LBFGS = dict(optimizer="lbfgs", lr=1.0)


def model(solver=None) -> fg.ExactGP:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.1 * torch.randn(40, generator=g, dtype=F64)
    solver = solver or fg.CG(tol=0.01, probes=5, precond=fg.PivotedCholesky(6))
    return fg.ExactGP(x, y, Scale(RBF(ard_dims=2)), solver=solver)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    """kind -> (config, tensors) of a real checkpoint after 3 steps ("adam": seeded CG with
    pivoted-Cholesky pivots in its solver state; "lbfgs": Cholesky)."""
    folder = tmp_path_factory.mktemp("ckpt")
    out = {}
    for kind, solver, kwargs in (("adam", None, ADAM), ("lbfgs", fg.Cholesky(), LBFGS)):
        fg.fit(model(solver), iters=3, progress=False, checkpoint=folder / kind, **kwargs)
        with zipfile.ZipFile(folder / kind) as archive:
            out[kind] = (archive.read("config.json"),
                         torch.load(io.BytesIO(archive.read("tensors.pt")), weights_only=True))
    return out


def damaged(written, kind: str, tmp_path, tensors=None, config=None):
    """The checkpoint ``kind`` after ``tensors(state)`` / ``config(dict)`` edited it, at a new path."""
    raw, state = written[kind]
    state = {group: dict(values) for group, values in state.items()}
    parsed = json.loads(raw)
    if tensors is not None:
        tensors(state)
    if config is not None:
        config(parsed)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = tmp_path / f"{kind}-damaged.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(parsed))
        archive.writestr("tensors.pt", buffer.getvalue())
    return path


def set_tensor(group: str, name: str, make):
    def edit(state):
        state[group][name] = make(state[group].get(name))
    return edit


def drop(group: str, name: str):
    return lambda state: state[group].pop(name)


ADAM_CASES = {  # id -> (tensor edit, config edit, what the message says)
    "moment-wrong-shape": (set_tensor("optimizer", f"{RAW}/exp_avg", lambda t: torch.zeros(5, dtype=F64)), None,
                           r"exp_avg'\] is torch.float64 of shape \(5,\); expected torch.float64 of shape \(1, 2\)"),
    "moment-nan": (set_tensor("optimizer", f"{RAW}/exp_avg", lambda t: torch.full_like(t, float("nan"))), None,
                   r"NaN or infinity in the optimizer tensors"),
    "second-moment-negative": (set_tensor("optimizer", f"{RAW}/exp_avg_sq", lambda t: -t - 1), None,
                               r"exp_avg_sq'\] holds negative values"),
    "moment-wrong-dtype": (set_tensor("optimizer", f"{RAW}/exp_avg", lambda t: t.float()), None,
                           r"is torch.float32 of shape"),
    "step-count-beyond-the-step": (set_tensor("optimizer", f"{RAW}/step", lambda t: t + 10), None,
                                   r"\['step'\]: expected a whole number from 1 to 3"),
    "moment-missing": (drop("optimizer", f"{RAW}/exp_avg_sq"), None, r"refers to a missing tensor"),
    "moment-key-missing": (None, lambda c: c["optimizer_state"][RAW].pop("exp_avg_sq"),
                           r"missing \['exp_avg_sq'\]"),
    "optimizer-state-of-a-parameter-missing": (None, lambda c: c["optimizer_state"].pop(RAW),
                                               r"no Adam state for the parameters \['kernel.base.raw_lengthscale'\]"),
    "cpu-rng-missing": (drop("rng", "torch"), None, r"the CPU random state is missing"),
    "cpu-rng-truncated": (set_tensor("rng", "torch", lambda t: t[:100]), None, r"random state 'torch' is not one"),
    "cpu-rng-float": (set_tensor("rng", "torch", lambda t: t.double()), None, r"random state 'torch' is not a uint8"),
    "generator-rng-missing": (drop("rng", "generator"), None, r"random state of the probe generator is missing"),
    "generator-rng-truncated": (set_tensor("rng", "generator", lambda t: t[:7]), None,
                                r"random state 'generator' is not one"),
    "parameter-missing": (drop("model", RAW), None, r"the parameter 'kernel.base.raw_lengthscale' is missing"),
    "parameter-nan": (set_tensor("model", RAW, lambda t: torch.full_like(t, float("nan"))), None,
                      r"NaN or infinity in the model tensors \['kernel.base.raw_lengthscale'\]"),
    "parameter-wrong-shape": (set_tensor("model", RAW, lambda t: torch.zeros(1, 3, dtype=F64)), None,
                              r"parameter 'kernel.base.raw_lengthscale' is torch.float64 of shape \(1, 3\)"),
    "solver-state-of-another-kind": (lambda s: s.update(precond={
        "index": torch.zeros(40, 3, dtype=torch.long), "n": torch.tensor(40), "neighbors": torch.tensor(2),
        "seed": torch.tensor(0), "builds": torch.tensor(1)}), None, r"solver state .* is not one this model's solver"),
    "solver-state-pivots-out-of-range": (set_tensor("precond", "pivots", lambda t: t + 1000), None,
                                         r"solver state .* is not one this model's solver"),
    "history-nan-loss": (None, lambda c: c["history"]["loss"].__setitem__(1, {"__float__": "nan"}),
                         r"history: the losses must be finite"),
    "history-negative-time": (None, lambda c: c["history"]["step_seconds"].__setitem__(0, -1.0),
                              r"history: the step times"),
}

LBFGS_CASES = {
    "direction-wrong-shape": (set_tensor("optimizer", f"{FIRST}/d", lambda t: t[:2]), None,
                              r"\['d'\] is torch.float64 of shape \(2,\)"),
    "curvature-pairs-differ": (None, lambda c: c["optimizer_state"][FIRST]["old_stps"]["tensors"].pop(),
                               r"\['old_stps'\]: expected a list of \d+ tensors"),
    "h-diag-nan": (set_tensor("optimizer", f"{FIRST}/H_diag", lambda t: torch.full_like(t, float("nan"))), None,
                   r"NaN or infinity in the optimizer tensors"),
    "state-under-another-parameter": (None, lambda c: c["optimizer_state"].update(
        {RAW: c["optimizer_state"].pop(FIRST)}), r"L-BFGS keeps its state under"),
    "counter-negative": (None, lambda c: c["optimizer_state"][FIRST].update(n_iter={"value": -3}),
                         r"\['n_iter'\]: expected a whole number >= 0"),
}


def expect_refused(path, kwargs, solver, match):
    resumed = model(solver)
    before = {name: p.detach().clone() for name, p in resumed.named_parameters()}
    rng = torch.get_rng_state()
    try:
        fg.fit(resumed, iters=6, progress=False, checkpoint=path, resume=True, **kwargs)
    except fg.ModelFileError as err:
        assert str(path) in str(err) and err.path == path
        assert re.search(match, str(err)), str(err)
    except (KeyError, RuntimeError, IndexError, AttributeError, TypeError) as err:
        pytest.fail(f"obscure {type(err).__name__}: {err}")
    else:
        pytest.fail("the damaged checkpoint was resumed from")
    for name, p in resumed.named_parameters():  # nothing was restored
        assert torch.equal(p.detach(), before[name]), name
    assert torch.equal(torch.get_rng_state(), rng)
    assert resumed.solver_state() == {}


@pytest.mark.parametrize("case", list(ADAM_CASES))
def test_a_damaged_adam_checkpoint_is_refused_before_use(case, written, tmp_path):
    tensors, config, match = ADAM_CASES[case]
    path = damaged(written, "adam", tmp_path, tensors, config)
    expect_refused(path, ADAM, None, match)


@pytest.mark.parametrize("case", list(LBFGS_CASES))
def test_a_damaged_lbfgs_checkpoint_is_refused_before_use(case, written, tmp_path):
    tensors, config, match = LBFGS_CASES[case]
    path = damaged(written, "lbfgs", tmp_path, tensors, config)
    expect_refused(path, LBFGS, fg.Cholesky(), match)


@pytest.mark.parametrize("kind,kwargs,solver", [("adam", ADAM, None), ("lbfgs", LBFGS, fg.Cholesky())])
def test_the_undamaged_checkpoints_resume(kind, kwargs, solver, written, tmp_path):
    path = damaged(written, kind, tmp_path)  # rewritten unchanged
    history = fg.fit(model(solver), iters=4, progress=False, checkpoint=path, resume=True, **kwargs)
    assert history.start_step == 3 and len(history) == 4 and read_checkpoint(path).step == 4
