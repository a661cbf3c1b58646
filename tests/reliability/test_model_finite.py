# Never negative variances, never silent NaN: FixedNoise variances validated wherever they enter,
# kernel overflow refused with the kernel, dtype and fix named, and every prediction path returning
# finite, non-negative variances or raising.
import warnings

import numpy as np
import pytest
import torch

import flashgp as fg
from flashgp.distributions import MarginalOnly, Posterior
from flashgp.kernels import RBF, Linear, Polynomial, Scale
from flashgp.likelihoods import FixedNoise
from flashgp.models.finite import NonFiniteError
from bad_input_helpers import with_tensors

F64 = torch.float64
G = torch.Generator().manual_seed(7)
X = torch.rand(40, 2, generator=G, dtype=F64) * 4 - 2
Y = torch.sin(X).sum(-1) + 0.05 * torch.randn(40, generator=G, dtype=F64)
XT = torch.rand(6, 2, generator=G, dtype=F64) * 4 - 2


def fixed(noise=0.05, solver=None, n=40):
    return fg.ExactGP(X[:n], Y[:n], Scale(RBF()), likelihood=FixedNoise(torch.full((n,), noise, dtype=F64)),
                      solver=solver or fg.Cholesky())


# ----- FixedNoise variances: validated where they enter ------------------------------------------------

@pytest.mark.parametrize("bad", [-0.02, 0.0, float("nan"), float("inf")])
def test_fixed_noise_refuses_bad_values_at_construction_and_assignment(bad):
    values = torch.full((40,), 0.05, dtype=F64)
    values[3] = bad
    with pytest.raises(ValueError, match=r"^noise: expected a \(\*batch, n\) tensor of finite positive"):
        FixedNoise(values)
    model = fixed()
    before = model.predict(XT).variance
    with pytest.raises(ValueError, match=r"^noise: expected .* finite positive"):
        model.likelihood.noise = values
    torch.testing.assert_close(model.predict(XT).variance, before, rtol=0, atol=0)  # untouched


def test_fixed_noise_assignment_casts_and_copies():
    model = fixed()
    values = np.full(40, 0.2, dtype=np.float32)
    model.likelihood.noise = values
    assert model.likelihood.noise.dtype == F64
    values[:] = -1.0  # the caller's array: not the likelihood's
    assert bool((model.likelihood.noise > 0).all())
    with pytest.raises(TypeError, match=r"^noise: expected a tensor of variances, got NoneType"):
        model.likelihood.noise = None


def test_fixed_noise_state_dict_with_negative_variances_is_refused_and_not_loaded():
    model = fixed()
    state = model.state_dict()
    state["likelihood.noise"] = torch.full((40,), -0.5, dtype=F64)
    with pytest.raises(RuntimeError, match=r"likelihood\.noise: expected finite positive noise variances"):
        model.load_state_dict(state)
    assert bool((model.likelihood.noise == 0.05).all())


def test_model_file_with_negative_fixed_noise_is_a_model_file_error(tmp_path):
    def negate(state):
        state["likelihood.noise"] = -state["likelihood.noise"]
    with pytest.raises(fg.ModelFileError, match="noise"):
        with_tensors(tmp_path, negate, fixed())


def test_fixed_noise_edited_in_place_is_refused_before_use():
    model = fixed()
    model.predict(XT)
    with torch.no_grad():
        model.likelihood.noise[5] = -0.02  # bumps the version: the likelihood checks again
    with pytest.raises(ValueError, match=r"^likelihood\.noise: expected finite non-negative noise variances, "
                                         r"found 1 of 40 that are not \(min -0\.02\)"):
        model.mll()
    with pytest.raises(ValueError, match="noise"):
        model.predict(XT)


def test_fixed_noise_edited_through_data_is_refused_by_the_prediction_cache():
    model = fixed()
    model.predict(XT)
    model.likelihood.noise.data.fill_(-0.02)  # no version bump: the cache checks the values
    with pytest.raises(NonFiniteError, match=r"^likelihood\.noise: expected finite non-negative noise variances, "
                                             r"found 40 of 40"):
        model.predict(XT)


def test_fixed_noise_reassigned_with_another_length_is_refused():
    model = fixed()
    model.likelihood.noise = torch.full((30,), 0.1, dtype=F64)
    with pytest.raises(ValueError, match=r"^noise: the FixedNoise likelihood holds 30 variances, expected one per "
                                         r"training point \(40\)"):
        model.predict(XT)
    with pytest.raises(ValueError, match="holds 30 variances"):
        model.mll()


def test_predict_refuses_negative_test_noise_and_posterior_refuses_negative_noise():
    with pytest.raises(ValueError, match=r"^noise: expected 6 finite non-negative variances"):
        fixed().predict(XT, noise=torch.full((6,), -0.1, dtype=F64))
    post = fixed().posterior(XT)
    with pytest.raises(ValueError, match=r"^noise: expected finite non-negative"):
        post.noise = torch.full((6,), -0.1, dtype=F64)


# ----- kernel overflow: a clear error naming the kernel, the dtype and the fix --------------------------

def test_float32_polynomial_overflow_is_refused_at_construction():
    # the case: float32 inputs in [0, 1e4] with Polynomial(power=5) (K overflows to inf)
    x = torch.rand(50, 1, generator=G) * 1e4
    with pytest.raises(NonFiniteError, match=r"^kernel: the kernel Polynomial\(power=5\) overflows float32 at the "
                                             r"training inputs.*scale the inputs.*float64"):
        fg.ExactGP(x, torch.randn(50, generator=G), Polynomial(power=5), solver=fg.Cholesky())
    # the same data in float64 or standardized fits
    for data in (x.double(), (x - x.mean()) / x.std()):
        model = fg.ExactGP(data, torch.randn(50, generator=G, dtype=data.dtype), Polynomial(power=5), solver=fg.Cholesky())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fg.NumericalWarning)
            post = model.predict(data[:5])
        assert bool(torch.isfinite(post.variance).all()) and bool((post.variance >= 0).all())


def test_overflow_at_test_inputs_only_names_the_test_inputs():
    model = fg.ExactGP(X.float(), Y.float(), Polynomial(power=5), solver=fg.Cholesky())
    with pytest.raises(NonFiniteError, match=r"overflows float32 at the test inputs.*\|x\| = 1e\+05"):
        model.predict(torch.tensor([[1e5, 1e5], [0.0, 0.0]]))


@pytest.mark.parametrize("solver", [fg.Cholesky(), fg.CG()], ids=["cholesky", "cg"])
def test_overflowing_parameter_names_the_parameter(solver):
    model = fg.ExactGP(X, Y, Scale(Linear()), solver=solver)
    model.kernel.raw_outputscale.data.fill_(float("inf"))
    for call in (model.mll, lambda: model.predict(XT)):
        with pytest.raises(NonFiniteError, match=r"^non-finite parameters: kernel\.raw_outputscale = \[inf\] "
                                                 r"\(stores kernel\.outputscale\)"):
            call()


# ----- every prediction path: finite, never negative -------------------------------------------------------

PATHS = {
    "cholesky": fg.Cholesky(),
    "cg": fg.CG(tol=1e-3, variance_tol=None),
    "cg-certified": fg.CG(tol=1e-3),
    "lanczos": fg.CG(tol=1e-3, exact_var_max=0, variance_tol=None, root_rank=20),
    "lanczos-certified": fg.CG(tol=1e-3, exact_var_max=0, root_rank=20),
    "local": fg.CG(tol=1e-3, exact_var_max=0, local_neighbors=8, variance_tol=None),
    "local-certified": fg.CG(tol=1e-3, exact_var_max=0, local_neighbors=8),
}


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("path", list(PATHS))
def test_variances_are_finite_and_non_negative_on_every_path(path, dtype):
    # nearly noise-free data predicted at the training points themselves: exact variances are
    # ~ the noise floor, so round-off pushes the computed ones below 0 where nothing clamps them
    model = fg.ExactGP(X.to(dtype), torch.sin(X).sum(-1).to(dtype), Scale(RBF()), solver=PATHS[path])
    with torch.no_grad():
        model.kernel.base.lengthscale = 1.5
        model.likelihood.noise = model.likelihood.noise_floor * 1.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)
        for post in (model.posterior(X.to(dtype)), model.predict(X.to(dtype))):
            var = post.variance
            assert bool(torch.isfinite(var).all()) and bool((var >= 0).all()), (path, var.min())
            assert bool(torch.isfinite(post.mean).all())
    assert model.diagnostics["variance_method"].split("+")[0] == path.split("-")[0]


def test_posterior_refuses_nan_variances_instead_of_returning_them():
    post = Posterior(torch.zeros(3, dtype=F64), MarginalOnly(torch.tensor([0.1, float("nan"), 0.2], dtype=F64)))
    with pytest.raises(ValueError, match=r"^variance: 1 of 3 posterior variances are NaN or infinite"):
        _ = post.variance
    clamped = Posterior(torch.zeros(2, dtype=F64), MarginalOnly(torch.tensor([-1e-12, 0.3], dtype=F64)))
    assert clamped.variance.tolist() == [0.0, 0.3] and clamped.diagnostics["variance_clamped"] == 1
