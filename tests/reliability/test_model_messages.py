# Messages that name the real cause: a NaN noise is blamed on the noise (not on lengthscales), a
# finite input too large for a float32 model is called an overflow (not "not finite"), a
# lengthscale that underflowed to 0 is named, and fg.fit stops with the same attribution.
import warnings

import numpy as np
import pytest

import flashgp as fg
from flashgp.kernels import RBF, Scale
from flashgp.models.finite import NonFiniteError

RNG = np.random.RandomState(5)
X = RNG.uniform(-2, 2, (30, 2))
Y = np.sin(X[:, 0]) + X[:, 1]
SOLVERS = {"cholesky": fg.Cholesky(), "cg": fg.CG()}


def gp(solver="cholesky", dtype=np.float64):
    return fg.ExactGP(X.astype(dtype), Y.astype(dtype), Scale(RBF()), solver=SOLVERS[solver])


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_nan_noise_is_blamed_on_the_noise(solver):
    model = gp(solver)
    model.likelihood.raw_noise.data.fill_(float("nan"))
    calls = {"mll": model.mll, "predict": lambda: model.predict(X[:3])}
    for name, call in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no CG warning about NaN residuals before the error
            with pytest.raises(NonFiniteError) as caught:
                call()
        message = str(caught.value)
        assert message.startswith("non-finite parameters: likelihood.raw_noise = [nan] (stores likelihood.noise)")
        assert "lengthscale" not in message, (name, message)


def test_fit_stops_naming_the_nan_parameter():
    model = gp()
    model.likelihood.raw_noise.data.fill_(float("nan"))
    with pytest.warns(fg.NumericalWarning, match=r"fit stopped at step 0: non-finite parameters: likelihood\.raw_noise"):
        history = fg.fit(model, iters=3, progress=False)
    assert "overflowing lengthscales" not in history.stopped_early


def test_lengthscale_underflowed_to_zero_is_named():
    model = gp()
    model.kernel.base.raw_lengthscale.data.fill_(-1000.0)  # softplus(-1000) == 0 in float64
    with pytest.raises(NonFiniteError, match=r"^parameters that underflowed to 0: kernel\.base\.lengthscale = 0 \(stored "
                                             r"as raw_lengthscale = -1e\+03"):
        model.predict(X[:2])


def test_finite_float64_input_too_large_for_a_float32_model_is_called_an_overflow():
    model = gp(dtype=np.float32)
    for call in (lambda: model.predict(np.array([[1e39, 0.0]])),
                 lambda: model.set_train_data(np.full((30, 2), 1e39), Y)):
        with pytest.raises(ValueError, match=r"^x: values up to 1e\+39 overflow the model's float32 \(largest 3\.4e\+38\); "
                                             r"rescale them .* float64 data"):
            call()
    with pytest.raises(ValueError, match=r"^x: expected finite values, found NaN or infinity"):
        model.predict(np.array([[np.inf, 0.0]]))  # a real infinity is still called one


def test_initial_noise_above_a_floor_that_dwarfs_the_target_variance():
    # Polynomial(power=5) on inputs up to 1e4: k(x, x) ~ 1e40 and the default floor ~ 1e30; the
    # initial noise floor + 0.1 var(y) used to equal the floor, and construction failed with
    # "noise_floor: expected a value below the noise (9.55e+28), got 9.55e+28"
    x = RNG.uniform(0, 1e4, (40, 1))
    model = fg.ExactGP(x, RNG.randn(40), fg.kernels.Polynomial(power=5), solver=fg.Cholesky())
    assert float(model.likelihood.noise.detach()) > model.likelihood.noise_floor
