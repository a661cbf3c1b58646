# Tests of how fg.fit reports numerical warnings: each kind shown once, repeats counted, recorded in
# History.warnings and summarized at the end; other warnings and the user's filters untouched.
import warnings

import torch

import flashgp as fg
from flashgp.errors import NumericalWarning
from flashgp.fit_warnings import WarningDigest, warning_kind
from flashgp.kernels import RBF, Scale


def starved_cg_model(n=300):
    """A CG model whose solves cannot converge in 2 iterations: a warning at every step."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    y = torch.sin(6 * x.sum(-1)) + 0.05 * torch.randn(n, generator=gen, dtype=torch.float64)
    solver = fg.CG(tol=1e-8, max_iters=2, lanczos_iters=0, probes=3, precond=None)
    return fg.ExactGP(x, y, Scale(RBF()).double(), solver=solver)


def test_repeated_warning_is_shown_once_then_summarized():
    model = starved_cg_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fg.fit(model, iters=6, progress=False, seed=0)
    shown = [str(w.message) for w in caught if issubclass(w.category, NumericalWarning)]
    cg = [m for m in shown if m.startswith("CG for the log marginal likelihood")]
    summaries = [m for m in shown if "raised" in m and "times in 6 steps" in m]
    assert len(cg) == 2 and len(summaries) == 1  # the first one, then the summary
    assert summaries[0].startswith("CG for the log marginal likelihood: raised 6 times in 6 steps")
    assert "at step 0" in summaries[0] and "no convergence" in summaries[0]
    recorded = [(step, m) for step, m in history.warnings if m.startswith("CG for the log")]
    assert [step for step, _ in recorded] == list(range(6))


def test_user_filters_still_silence_and_other_warnings_pass_through():
    model = starved_cg_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=NumericalWarning)
        history = fg.fit(model, iters=3, progress=False, seed=0)
    assert not [w for w in caught if issubclass(w.category, NumericalWarning)]
    assert len(history.warnings) >= 3  # still recorded
    digest = WarningDigest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            with digest.step(step):
                warnings.warn("a user warning", UserWarning)
        digest.summarize(3)
    assert [str(w.message) for w in caught] == ["a user warning"] * 3 and digest.records == []


def test_clean_fit_has_no_warnings_and_kinds_are_prefixes():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(50, 1, generator=gen, dtype=torch.float64)
    model = fg.ExactGP(x, torch.sin(4 * x[:, 0]), Scale(RBF()).double(), solver=fg.Cholesky())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fg.fit(model, iters=3, progress=False)
    assert history.warnings == [] and not [w for w in caught if issubclass(w.category, NumericalWarning)]
    assert warning_kind("SLQ log determinant had not settled: its last 5 ...") == \
        "SLQ log determinant had not settled"
