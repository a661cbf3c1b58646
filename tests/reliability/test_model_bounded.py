# Bounded model outputs: predictions take the test points in chunks (never an m x n matrix), the
# chunked results equal the unchunked ones, and samples and dense covariances are size-checked
# before anything is allocated.
import warnings

import pytest
import torch

import flashgp as fg
from flashgp.distributions import FactorDowndated, posterior as posterior_module
from flashgp.kernels import RBF, Scale
from flashgp.models import prediction
from flashgp.operators import KernelOperator
from flashgp.testing import check_operator

F64 = torch.float64
G = torch.Generator().manual_seed(11)
X = torch.rand(50, 2, generator=G, dtype=F64) * 4 - 2
Y = torch.sin(X).sum(-1) + 0.05 * torch.randn(50, generator=G, dtype=F64)
XT = torch.rand(700, 2, generator=G, dtype=F64) * 5 - 2.5


class RecordingRBF(RBF):
    """An RBF kernel that records the largest matrix it evaluates."""

    largest = 0

    def evaluate(self, x1, x2, diag):
        out = super().evaluate(x1, x2, diag)
        RecordingRBF.largest = max(RecordingRBF.largest, out.numel())
        return out


def gp(x=X, y=Y, kernel=None, **kwargs):
    return fg.ExactGP(x, y, kernel or Scale(RBF(ard_dims=2)), solver=fg.Cholesky(), **kwargs)


def small_chunks(monkeypatch, points=64, keep=False):
    """Chunks of ``points`` test points for a 50-point model; the factor kept only if ``keep``."""
    monkeypatch.setattr(prediction, "PREDICT_CHUNK_BYTES", 8 * 50 * points)
    if not keep:
        monkeypatch.setattr(prediction, "KEEP_FACTOR_BYTES", 0)


@pytest.mark.parametrize("keep", [True, False], ids=["factor-kept", "factor-lazy"])
@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_chunked_predictions_equal_unchunked(monkeypatch, keep, batch):
    if batch:
        x, y = torch.stack([X, X * 0.7]), torch.stack([Y, -Y])
        xt = torch.stack([XT[:200], XT[200:400]])
    else:
        x, y, xt = X, Y, XT[:200]
    whole = gp(x, y)
    ref = whole.predict(xt)
    rows = torch.tensor([3, 150, 7])
    v = torch.randn(*xt.shape[:-1], 2, generator=G, dtype=F64)
    want = (ref.mean, ref.variance, ref.covariance.to_dense(), ref.covariance.rows(rows), ref.covariance.matmul(v))
    small_chunks(monkeypatch, points=7, keep=keep)
    model = gp(x, y)
    model.load_state_dict(whole.state_dict())
    post = model.predict(xt)
    assert isinstance(post.covariance, FactorDowndated) != keep
    got = (post.mean, post.variance, post.covariance.to_dense(), post.covariance.rows(rows), post.covariance.matmul(v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("certified", [False, True], ids=["lanczos", "lanczos+cg"])
def test_lanczos_factor_recomputed_in_chunks_equals_the_kept_one(monkeypatch, certified):
    solver = fg.CG(tol=1e-6, eval_tol=1e-8, exact_var_max=0, root_rank=20,
                   variance_tol=1e-3 if certified else None)
    whole = fg.ExactGP(X, Y, Scale(RBF(ard_dims=2)), solver=solver)
    xt = XT[:200]
    rows, v = torch.tensor([5, 120]), torch.randn(200, 2, generator=G, dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fg.NumericalWarning)
        ref = whole.predict(xt)
        want = (ref.mean, ref.variance, ref.covariance.to_dense(), ref.covariance.rows(rows), ref.covariance.matmul(v),
                whole.diagnostics["variance_root_change"])
        small_chunks(monkeypatch, points=9)
        model = fg.ExactGP(X, Y, Scale(RBF(ard_dims=2)), solver=solver)
        model.load_state_dict(whole.state_dict())
        post = model.predict(xt)
    assert isinstance(post.covariance, FactorDowndated)
    got = (post.mean, post.variance, post.covariance.to_dense(), post.covariance.rows(rows), post.covariance.matmul(v),
           model.diagnostics["variance_root_change"])
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.as_tensor(g), torch.as_tensor(w), rtol=1e-12, atol=1e-12)


def test_many_test_points_never_build_an_m_by_n_matrix(monkeypatch):
    small_chunks(monkeypatch, points=64)
    model = gp(kernel=Scale(RecordingRBF(ard_dims=2)))
    RecordingRBF.largest = 0
    xt = torch.rand(5000, 2, generator=G, dtype=F64) * 4 - 2
    post = model.predict(xt)
    post.covariance.rows(torch.arange(3))
    post.covariance.matmul(torch.randn(5000, generator=G, dtype=F64))
    assert RecordingRBF.largest <= 64 * 50  # one chunk of K(x*, X); never 5000 x 50
    assert bool(torch.isfinite(post.variance).all()) and post.mean.shape == (5000,)


def test_chunk_size_constant_bounds_the_cross_covariance():
    n = 2000  # the example: 100,000 points of a 2,000-point model, in float64
    chunk = prediction.chunk_points(n)
    assert chunk * n * 8 <= prediction.PREDICT_CHUNK_BYTES < (chunk + 1) * n * 8
    assert not prediction.keeps_factor(100_000, n, 1, F64)  # 1.6 GB: recomputed lazily instead
    assert prediction.keeps_factor(1_000, n, 1, F64)


def test_lazy_factor_operator_meets_the_operator_contract():
    model = gp()
    kernel, chol = model.kernel, model._prediction_cache().system.chol
    x = XT[:30]

    def factor(part):
        cross = kernel(part, X)
        return torch.linalg.solve_triangular(chol, cross.transpose(-1, -2), upper=False).transpose(-1, -2)

    def make():
        w = factor(x)
        variances = kernel.diag(x) - w.square().sum(-1)
        return FactorDowndated(KernelOperator(kernel, x), x, factor, variances, chunk=4)

    def dense(op):
        w = factor(x)
        return kernel(x, x).detach() - w @ w.transpose(-1, -2)

    with torch.no_grad():
        check_operator(make, dense, skip=("bilinear_grad",), name="FactorDowndated")


def test_sample_refuses_too_many_values_before_allocating():
    post = gp().predict(XT[:20])
    with pytest.raises(ValueError, match=r"^num_samples: 10,000,000 samples of 20 values make 200,000,000 values "
                                         r"\(1\.6 GB in float64\), above the limit .* draw at most 6,710,886 at a time"):
        post.sample(10**7)


def test_sample_in_chunks_has_the_right_shape_and_moments(monkeypatch):
    post = gp().predict(XT[:5])
    monkeypatch.setattr(posterior_module, "SAMPLE_CHUNK_VALUES", 5 * 1000)  # 1,000 samples per draw
    many = post.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert many.shape == (20_000, 5)
    torch.testing.assert_close(post.sample(20_000, generator=torch.Generator().manual_seed(0)), many, rtol=0, atol=0)
    torch.testing.assert_close(many.mean(0), post.mean, rtol=0, atol=0.05 * float(post.stddev.max()))
    torch.testing.assert_close(many.var(0), post.variance, rtol=0.1, atol=0)


def test_dense_covariance_of_many_points_is_refused_before_allocating():
    post = gp().posterior(torch.rand(20_000, 2, generator=G, dtype=F64))
    with pytest.raises(ValueError, match=r"^covariance: a dense 20000 x 20000 covariance of 20,000 test points takes "
                                         r"3\.2 GB in float64 .*posterior\.variance.*rows\(index\)"):
        post.covariance.to_dense()
    with pytest.raises(ValueError, match=r"^sample: joint samples need a dense 20000 x 20000 covariance"):
        post.sample()
