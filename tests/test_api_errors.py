# Bad arguments at the public API raise ValueError/TypeError whose message names the argument,
# at the point where the bad input enters (models, solvers, likelihoods, means, kernels).
import pytest
import torch

import flashgp as fg
from flashgp.kernels import RBF, Matern, Scale
from flashgp.likelihoods import FixedNoise, Gaussian
from flashgp.means import Constant
from flashgp.means import Linear as LinearMean

F64 = torch.float64


def xy(n=30, d=2, batch=()):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(*batch, n, d, generator=g, dtype=F64),
            torch.randn(*batch, n, generator=g, dtype=F64))


def model(**kwargs):
    x, y = xy()
    return fg.ExactGP(x, y, Scale(RBF()), **kwargs)


def with_nan(t, index=3):
    t = t.clone()
    t.view(-1)[index] = float("nan")
    return t


X, Y = xy()

# ----- ExactGP ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((X, Y[:-1], Scale(RBF())), {}, ValueError, "y"),                   # y wrong length
    ((X, Y.reshape(-1, 1), Scale(RBF())), {}, ValueError, "y"),         # y 2-D for unbatched x
    ((X, with_nan(Y), Scale(RBF())), {}, ValueError, "y"),              # NaN in y
    ((X, Y.clone().fill_(float("inf")), Scale(RBF())), {}, ValueError, "y"),
    ((with_nan(X), Y, Scale(RBF())), {}, ValueError, "x"),              # NaN in x
    (("abc", Y, Scale(RBF())), {}, TypeError, "x"),                     # string x
    ((X, "abc", Scale(RBF())), {}, TypeError, "y"),
    ((X.to(torch.complex128), Y, Scale(RBF())), {}, TypeError, "x"),
    ((X[:0], Y[:0], Scale(RBF())), {}, ValueError, "x"),                # no points
    ((X[:, :0], Y, Scale(RBF())), {}, ValueError, "x"),                 # no columns
    ((X, Y, "rbf"), {}, TypeError, "kernel"),                           # kernel not a Kernel
    ((X, Y, RBF), {}, TypeError, "kernel"),                             # the class, not an instance
    ((X, Y, Scale(RBF())), {"solver": "cg"}, TypeError, "solver"),      # solver not a solver
    ((X, Y, Scale(RBF())), {"solver": fg.CG}, TypeError, "solver"),
    ((X, Y, Scale(RBF())), {"solver": fg.PivotedCholesky(5)}, TypeError, "solver"),
    ((X, Y, Scale(RBF())), {"likelihood": 0.1}, TypeError, "likelihood"),
    ((X, Y, Scale(RBF())), {"likelihood": Gaussian}, TypeError, "likelihood"),
    ((X, Y, Scale(RBF())), {"mean": 0.0}, TypeError, "mean"),
    ((X, Y, Scale(RBF())), {"mean": torch.nn.Linear(2, 1)}, TypeError, "mean"),
])
def test_exact_gp_constructor(args, kwargs, exc, match):
    with pytest.raises(exc, match=rf"\b{match}\b"):
        fg.ExactGP(*args, **kwargs)


def test_exact_gp_batch_mismatch():
    x, y = xy(batch=(2,))
    with pytest.raises(ValueError, match=r"\by\b"):
        fg.ExactGP(x, y[:1].expand(3, -1), Scale(RBF()))


def test_fixed_noise_length_must_match_training_points():
    x, y = xy()
    with pytest.raises(ValueError, match=r"\bnoise\b"):
        fg.ExactGP(x, y, Scale(RBF()), likelihood=FixedNoise(torch.full((20,), 0.1, dtype=F64)))


def test_set_train_data_checks_like_the_constructor():
    m = model()
    with pytest.raises(ValueError, match=r"\by\b"):
        m.set_train_data(X, Y[:5])
    with pytest.raises(ValueError, match=r"\bx\b"):
        m.set_train_data(with_nan(X), Y)


def test_mismatched_columns_surface_at_first_use():
    x, y = xy(d=2)
    with pytest.raises(ValueError, match=r"\bard_dims\b"):
        fg.ExactGP(x, y, Scale(RBF(ard_dims=3))).mll()
    with pytest.raises(ValueError, match=r"\bx\b"):
        fg.ExactGP(x, y, Scale(RBF()), mean=LinearMean(3)).mll()


# ----- posterior / predict ---------------------------------------------------------------------

@pytest.mark.parametrize("x_test,exc,match", [
    (torch.randn(5, 3, dtype=F64), ValueError, "x"),         # wrong d
    (torch.randn(5, dtype=F64), ValueError, "x"),            # 1-D with d = 2
    (torch.randn(0, 2, dtype=F64), ValueError, "x"),         # no points
    (torch.full((3, 2), float("nan"), dtype=F64), ValueError, "x"),
    ("abc", TypeError, "x"),
])
def test_posterior_bad_inputs(x_test, exc, match):
    m = model()
    with pytest.raises(exc, match=rf"\b{match}\b"):
        m.posterior(x_test)
    with pytest.raises(exc, match=rf"\b{match}\b"):
        m.predict(x_test)


def test_posterior_batch_must_broadcast():
    x, y = xy(batch=(2,))
    m = fg.ExactGP(x, y, Scale(RBF()))
    with pytest.raises(ValueError, match=r"\bx\b"):
        m.posterior(torch.randn(3, 5, 2, dtype=F64))
    # broadcastable batches are fine
    assert m.posterior(torch.randn(5, 2, dtype=F64)).mean.shape == (2, 5)
    assert m.posterior(torch.randn(1, 5, 2, dtype=F64)).mean.shape == (2, 5)


def test_posterior_methods():
    post = model().posterior(torch.randn(4, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"\blevel\b"):
        post.confidence_region(level=1.5)
    with pytest.raises(ValueError, match=r"\bnum_samples\b"):
        post.sample(0)
    with pytest.raises(ValueError, match=r"\bnum_samples\b"):
        post.sample(2.0)


# ----- solvers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,exc,match", [
    (lambda: fg.CG(tol=-1), ValueError, "tol"),
    (lambda: fg.CG(tol=0), ValueError, "tol"),
    (lambda: fg.CG(tol="1"), TypeError, "tol"),
    (lambda: fg.CG(eval_tol=-1e-3), ValueError, "eval_tol"),
    (lambda: fg.CG(probes=0), ValueError, "probes"),
    (lambda: fg.CG(probes=2.5), TypeError, "probes"),
    (lambda: fg.CG(max_iters=0), ValueError, "max_iters"),
    (lambda: fg.CG(lanczos_iters=-1), ValueError, "lanczos_iters"),
    (lambda: fg.CG(root_rank=0), ValueError, "root_rank"),
    (lambda: fg.CG(exact_var_max=-1), ValueError, "exact_var_max"),
    (lambda: fg.CG(precond="x"), TypeError, "precond"),
    (lambda: fg.CG(precond=100), TypeError, "precond"),
    (lambda: fg.CG(backend="gpu"), ValueError, "backend"),
    (lambda: fg.CG(memory_budget=-1), ValueError, "memory_budget"),
    (lambda: fg.CG(memory_budget="1GB"), TypeError, "memory_budget"),
    (lambda: fg.CG(reorthogonalize=1), TypeError, "reorthogonalize"),
    (lambda: fg.PivotedCholesky(-1), ValueError, "rank"),
    (lambda: fg.PivotedCholesky(1.5), TypeError, "rank"),
    (lambda: fg.PivotedCholesky(True), TypeError, "rank"),
    (lambda: fg.Cholesky(jitter=-1.0), ValueError, "jitter"),
    (lambda: fg.Cholesky(jitter=0.0), ValueError, "jitter"),
    (lambda: fg.Cholesky(max_tries=-1), ValueError, "max_tries"),
    (lambda: fg.Cholesky(backend="blocky"), ValueError, "backend"),
    (lambda: fg.Auto(max_cholesky_n=-1), ValueError, "max_cholesky_n"),
    (lambda: fg.Auto(cg=fg.Cholesky()), TypeError, "cg"),
    (lambda: fg.Auto(cholesky=fg.CG()), TypeError, "cholesky"),
])
def test_solver_arguments(make, exc, match):
    with pytest.raises(exc, match=rf"\b{match}\b"):
        make()


def test_valid_solvers_construct():
    assert fg.CG(precond=None).precond is None
    assert fg.CG(exact_var_max=0, lanczos_iters=0).exact_var_max == 0
    assert fg.PivotedCholesky(0).rank == 0
    assert fg.Auto(max_cholesky_n=0).resolve(1) == fg.CG()


# ----- likelihoods and means ------------------------------------------------------------------

@pytest.mark.parametrize("make,exc,match", [
    (lambda: Gaussian(noise=-1), ValueError, "noise"),
    (lambda: Gaussian(noise=0.0), ValueError, "noise"),
    (lambda: Gaussian(noise=float("nan")), ValueError, "noise"),
    (lambda: Gaussian(noise=0.1, noise_floor=0.5), ValueError, "noise"),
    (lambda: Gaussian(noise_floor=-1.0), ValueError, "noise_floor"),
    (lambda: FixedNoise(torch.tensor([0.1, -0.2])), ValueError, "noise"),
    (lambda: FixedNoise(torch.tensor([0.1, 0.0])), ValueError, "noise"),
    (lambda: FixedNoise(torch.tensor([0.1, float("nan")])), ValueError, "noise"),
    (lambda: FixedNoise(torch.tensor(0.1)), ValueError, "noise"),
    (lambda: FixedNoise("abc"), TypeError, "noise"),
    (lambda: LinearMean(0), ValueError, "input_dims"),
    (lambda: LinearMean(2.0), ValueError, "input_dims"),
])
def test_likelihood_and_mean_arguments(make, exc, match):
    with pytest.raises(exc, match=rf"\b{match}\b"):
        make()


@pytest.mark.parametrize("value", [-0.1, 0.0, float("nan"), [0.1, 0.2]])
def test_noise_setter(value):
    lik = Gaussian()
    with pytest.raises(ValueError, match=r"\bnoise\b"):
        lik.noise = value


def test_noise_below_floor_is_rejected_by_setter():
    lik = Gaussian(noise_floor=1e-3)
    with pytest.raises(ValueError, match=r"\bnoise\b"):
        lik.noise = 5e-4
    lik.noise = 2e-3
    assert abs(float(lik.noise.detach()) - 2e-3) < 1e-9


def test_constant_mean_setter_and_kernel_errors():
    mean = Constant()
    mean.constant = 0.5
    assert float(mean.constant.detach()) == 0.5
    with pytest.raises(ValueError, match=r"\bnu\b"):
        Matern(nu=3)
    with pytest.raises(ValueError, match=r"\bard_dims\b"):
        RBF(ard_dims=0)
