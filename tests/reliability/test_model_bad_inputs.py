# The model side of the bad-input suite (issue 27): stale answers, negative or NaN variances,
# unbounded outputs and misleading messages, one row per distinct bad input. Each ends in a
# ValueError/TypeError naming the argument (NonFiniteError, ModelFileError are ValueErrors) or a
# correct, finite result (the same outcome kinds as test_bad_inputs.py).
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from bad_input_helpers import F64, X, XT, Y, Case, Raises, Returns, fixed_noise_model, gp, run_case, same, with_tensors

import flashgp as fg
from flashgp.kernels import Polynomial
from flashgp.likelihoods import FixedNoise
from flashgp.models import prediction

V, T = ValueError, TypeError


def numpy_edit(_):
    x, y = X.numpy().copy(), Y.numpy().copy()
    model = gp(x, y)
    before = model.predict(XT)
    y[:] = -y
    x[:] = 0.0
    return model.predict(XT), before


def data_edit(_):
    model = gp()
    model.predict(XT)
    model.kernel.base.raw_lengthscale.data.fill_(0.5)
    fresh = gp(X.clone(), Y.clone())
    fresh.load_state_dict(model.state_dict())
    return model.predict(XT), fresh.predict(XT)


def stale_covariance(_):
    model = gp()
    post = model.posterior(XT)
    model.mean.constant = 3.0
    return post.covariance.to_dense()


def negative_in_place(_):
    model = fixed_noise_model()
    with torch.no_grad():
        model.likelihood.noise[0] = -0.02
    return model.predict(XT)


def negative_data(_):
    model = fixed_noise_model()
    model.predict(XT)
    model.likelihood.noise.data[0] = -0.02
    return model.predict(XT)


def with_raw(name, value, call="predict"):
    def trigger(_):
        model = gp()
        module, _, leaf = name.rpartition(".")
        getattr(model.get_submodule(module), leaf).data.fill_(value)
        return model.predict(XT) if call == "predict" else model.mll()
    return trigger


def tiny_noise_at_training_points(_):
    model = gp()
    model.likelihood.noise = model.likelihood.noise_floor * 1.01
    post = model.posterior(X)
    assert bool((post.variance >= 0).all())
    return post


def chunked_vs_whole(_):
    whole = gp().predict(XT)
    with mock.patch.object(prediction, "PREDICT_CHUNK_BYTES", 8 * 20 * 2), \
            mock.patch.object(prediction, "KEEP_FACTOR_BYTES", 0):
        return gp().predict(XT), whole


def reassigned_length(_):
    model = fixed_noise_model()
    model.likelihood.noise = torch.full((30,), 0.1, dtype=F64)
    return model.predict(XT)


C = Case
CASES = [
    # answers never go stale
    C("stale/caller-numpy-edited-after-construction", numpy_edit, Returns(same())),
    C("stale/parameter-edited-through-data", data_edit, Returns(same(1e-12))),
    C("stale/covariance-after-model-changed", stale_covariance, Raises(V, r"^covariance: the model changed after")),
    # never negative variances, never silent NaN
    C("fixed-noise/negative-assignment", lambda t: setattr(fixed_noise_model().likelihood, "noise",
                                                             torch.full((20,), -0.02, dtype=F64)),
      Raises(V, r"^noise: expected a \(\*batch, n\) tensor of finite positive variances, got 20 of 20")),
    C("fixed-noise/zero-in-constructor", lambda t: FixedNoise(torch.zeros(20)), Raises(V, r"^noise: expected")),
    C("fixed-noise/none-assignment", lambda t: setattr(fixed_noise_model().likelihood, "noise", None),
      Raises(T, r"^noise: expected a tensor of variances")),
    C("fixed-noise/negative-in-file", lambda t: with_tensors_fixed(t), Raises(fg.ModelFileError, r"likelihood\.noise")),
    C("fixed-noise/negative-in-place", negative_in_place,
      Raises(V, r"^likelihood\.noise: expected finite non-negative noise variances")),
    C("fixed-noise/negative-through-data", negative_data,
      Raises(V, r"^likelihood\.noise: expected finite non-negative noise variances, found 1 of 20")),
    C("fixed-noise/reassigned-other-length", reassigned_length, Raises(V, r"^noise: the FixedNoise likelihood holds 30")),
    C("kernel/polynomial-float32-overflow",
      lambda t: fg.ExactGP(torch.rand(30, 1) * 1e4, torch.rand(30), Polynomial(power=5)),
      Raises(V, r"^kernel: the kernel Polynomial\(power=5\) overflows float32 at the training inputs")),
    C("kernel/overflow-at-test-inputs-only",
      lambda t: fg.ExactGP(X.float(), Y.float(), Polynomial(power=5)).predict(torch.full((2, 2), 1e5)),
      Raises(V, r"overflows float32 at the test inputs")),
    C("param/nan-noise", with_raw("likelihood.raw_noise", float("nan")),
      Raises(V, r"^non-finite parameters: likelihood\.raw_noise = \[nan\] \(stores likelihood\.noise\)")),
    C("param/inf-outputscale-mll", with_raw("kernel.raw_outputscale", float("inf"), "mll"),
      Raises(V, r"^non-finite parameters: kernel\.raw_outputscale = \[inf\]")),
    C("param/lengthscale-underflowed", with_raw("kernel.base.raw_lengthscale", -1000.0),
      Raises(V, r"^parameters that underflowed to 0: kernel\.base\.lengthscale")),
    C("ok/variances-at-training-points-tiny-noise", tiny_noise_at_training_points,
      Returns(lambda post: None)),
    # bounded outputs
    C("sample/hundred-million", lambda t: gp().predict(XT).sample(10**8),
      Raises(V, r"^num_samples: 100,000,000 samples of 5 values make 500,000,000 values")),
    C("covariance/dense-of-20000-points", lambda t: gp().posterior(torch.rand(20_000, 2, dtype=F64)).covariance.to_dense(),
      Raises(V, r"^covariance: a dense 20000 x 20000 covariance of 20,000 test points takes 3\.2 GB")),
    C("ok/predict-in-chunks-of-2-points", chunked_vs_whole, Returns(same(1e-12))),
    # messages that name the cause
    C("x/finite-float64-overflowing-float32-model",
      lambda t: fg.ExactGP(X.float(), Y.float(), fg.kernels.RBF()).predict(np.array([[1e39, 0.0]])),
      Raises(V, r"^x: values up to 1e\+39 overflow the model's float32")),
]


def negate_noise(state):
    state["likelihood.noise"] = -state["likelihood.noise"]


def with_tensors_fixed(tmp):
    """Load a saved FixedNoise model whose noise tensor was made negative."""
    return with_tensors(tmp, negate_noise, fixed_noise_model())


def test_case_ids_are_distinct():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_model_bad_input(case, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)
        run_case(case, tmp_path)
