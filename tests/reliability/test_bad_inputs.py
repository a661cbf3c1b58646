# The bad-input suite: one table of distinct bad inputs across flashgp's public API (models, kernels,
# likelihoods, means, fit, posteriors, solvers, GPRegressor, the command line, save/load). Each ends
# in a ValueError/TypeError naming the argument, a one-line CLI error, or a correct, finite result.
import pickle
import signal
import warnings
from functools import lru_cache

import numpy as np
import pytest
import scipy.sparse
import torch
from bad_input_helpers import (F64, GOOD_CSV, META, X, XT, Y, Case, Exits, Raises, Returns, archive, assert_finite,
                               batched, check_cli_numbers, cli_fit_ok, cli_predict, data, fit_bytes,
                               fit_cli, fixed_noise_model, gp, load_bytes, model, run_case, run_main, same,
                               save_nan_model, saved_model, set_nan, with_config, with_tensors, write)

import flashgp as fg
from flashgp.kernels import RBF, RQ, Matern, Periodic, Polynomial, Scale
from flashgp.likelihoods import FixedNoise, Gaussian
from flashgp.means import Constant
from flashgp.means import Linear as LinearMean

DEFAULT = torch.get_default_dtype()
V, T = ValueError, TypeError
RNG = np.random.RandomState(0)
SX = RNG.uniform(-2, 2, (30, 2))
SY = np.sin(SX[:, 0]) + SX[:, 1] + 0.05 * RNG.randn(30)


def pd():
    """pandas, or a skip of the case that needs it."""
    return pytest.importorskip("pandas")


def regressor(**params):
    """A GPRegressor (3 Adam steps unless given), or a skip of the case when sklearn is missing."""
    pytest.importorskip("sklearn")
    from flashgp.sklearn import GPRegressor
    return GPRegressor(**{"iters": 3, **params})


@lru_cache(maxsize=None)
def fitted():
    return regressor().fit(SX, SY)


def sk(X=SX, y=SY, **params):
    """Fit a small GPRegressor (3 Adam steps unless given)."""
    return regressor(**params).fit(X, y)


def sk_pair(x_bad, y_bad=SY, x_ref=SX, y_ref=SY):
    """(predictions of a fit on the bad-but-usable inputs at their first 5 rows, the same for the clean fit)."""
    return sk(x_bad, y_bad).predict(x_bad[:5]), sk(x_ref, y_ref).predict(x_ref[:5])


def no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def one_point_closed_form(_):
    m = gp(X[:1], Y[:1])
    with torch.no_grad():
        c, noise = m.mean.constant, m.likelihood.noise
        k_star = m.kernel(XT, X[:1])[:, 0]
        want = c + k_star * (Y[0] - c) / (m.kernel(X[:1])[0, 0] + noise)
    return m.posterior(XT).mean, want


def numpy_solvers(tmp):
    solver = fg.CG(tol=np.float32(0.5), probes=np.int64(4), precond=fg.PivotedCholesky(np.int64(10)))
    fg.save(gp(solver=solver), tmp / "m.fgp")
    return solver, fg.load(tmp / "m.fgp").solver


def check_numpy_solvers(pair):
    solver, loaded = pair
    assert solver == loaded == fg.CG(tol=0.5, probes=4, precond=fg.PivotedCholesky(10))
    assert type(solver.probes) is int and type(solver.tol) is float and type(solver.precond.rank) is int


def sample_numpy_count(_):
    post = model().posterior(XT)
    return (post.sample(np.int64(3), generator=torch.Generator().manual_seed(1)),
            post.sample(3, generator=torch.Generator().manual_seed(1)))


def posterior_of_requires_grad(_):
    """Test inputs that require grad give a differentiable posterior with the same values."""
    post = model().posterior(XT.clone().requires_grad_())
    assert post.mean.requires_grad and post.variance.requires_grad
    with torch.no_grad():
        plain = model().posterior(XT)
    return post, plain


def fit_requires_grad_x(_):
    got = fg.fit(gp(X.clone().requires_grad_(), Y), iters=3, progress=False).loss
    return torch.tensor(got), torch.tensor(fg.fit(gp(), iters=3, progress=False).loss)


def set_train_float32(_):
    x, y = data(n=15, seed=3)
    m, ref = gp(), gp()
    m.set_train_data(x.float(), y.float())
    ref.set_train_data(x.float().double(), y.float().double())
    return m.predict(XT), ref.predict(XT)


def cg_identical_points(_):
    x, y = X[:1].expand(30, 2), Y[:1].expand(30)
    cg = fg.CG(eval_tol=1e-8, variance_tol=1e-8, precond=fg.PivotedCholesky(5))
    return gp(x, y, solver=cg).predict(XT), gp(x, y).predict(XT)


def sk_column_vector_y(_):
    from sklearn.exceptions import DataConversionWarning
    with pytest.warns(DataConversionWarning):
        got = sk(SX, SY[:, None]).predict(SX[:5])
    return got, sk().predict(SX[:5])


def sk_constant_y(_):
    mean, std = sk(SX, np.full(30, 2.5)).predict(SX[:5], return_std=True)
    assert np.all(std > 0)
    return mean, np.full(5, 2.5)


def text_frame(n=5):
    return pd().DataFrame({"a": np.arange(n, dtype=float), "b": ["x"] * n})


C = Case
CASES = [
    # ----- ExactGP: data entering the constructor and set_train_data ------------------------------
    C("gp/x-dataframe-with-text-column", lambda t: gp(text_frame(20), Y), Raises(T, r"^x: .*non-numeric.*'b'")),
    C("gp/x-numpy-strings", lambda t: gp(np.full((20, 2), "a"), Y), Raises(T, r"^x: expected a tensor or numeric")),
    C("gp/x-object-array-with-None", lambda t: gp(np.array([[1.0, None]] * 20), Y), Raises(V, r"^x: expected finite")),
    C("gp/x-object-array-with-text", lambda t: gp(np.array([[1.0, "a"]] * 20, dtype=object), Y),
      Raises(T, r"^x: .*object array")),
    C("gp/x-None", lambda t: gp(None, Y), Raises(T, r"^x: expected a tensor")),
    C("gp/y-None", lambda t: gp(X, None), Raises(T, r"^y: expected a tensor")),
    C("gp/x-sparse", lambda t: gp(X.to_sparse(), Y), Raises(T, r"^x: expected a dense tensor")),
    C("gp/x-meta-device", lambda t: gp(X.to("meta"), Y.to("meta")), Raises(V, r"^x: .*'meta' device")),
    C("gp/x-minus-infinity", lambda t: gp(X.index_fill(0, torch.tensor([2]), -float("inf")), Y),
      Raises(V, r"^x: expected finite")),
    C("gp/x-overflows-distances", lambda t: gp(X * 1e200, Y), Raises(V, r"^x: values up to .* overflow")),
    C("gp/x-float32-overflows", lambda t: gp(X.float() * 1e25, Y), Raises(V, r"^x: .*float32")),
    C("gp/y-overflows-residuals", lambda t: gp(X, Y * 1e200), Raises(V, r"^y: values up to .* overflow")),
    C("gp/y-complex", lambda t: gp(X, Y.to(torch.complex128)), Raises(T, r"^y: expected real")),
    C("gp/x-0d-scalar", lambda t: gp(torch.tensor(1.0), torch.tensor(1.0)), Raises(V, r"^x: expected shape")),
    C("gp/kernel-None", lambda t: fg.ExactGP(X, Y, None), Raises(T, r"^kernel: expected")),
    C("gp/kernel-batch-mismatch", lambda t: batched(Scale(RBF(batch_shape=(3,)))),
      Raises(V, r"^kernel: batch_shape \(3,\) does not broadcast")),
    C("gp/likelihood-batch-mismatch", lambda t: batched(likelihood=Gaussian(batch_shape=(3,))),
      Raises(V, r"^likelihood: batch_shape \(3,\)")),
    C("gp/mean-batch-mismatch", lambda t: batched(mean=Constant(batch_shape=(3,))), Raises(V, r"^mean: batch_shape")),
    C("gp/fixed-noise-batch-mismatch", lambda t: batched(likelihood=FixedNoise(torch.full((3, 20), 0.1))),
      Raises(V, r"^likelihood: batch_shape")),
    C("gp/active-dims-beyond-columns", lambda t: gp(kernel=RBF(active_dims=[0, 4])),
      Raises(V, r"^kernel: .*2 column.*active_dims")),
    C("gp/mean-linear-wrong-d-at-construction", lambda t: gp(mean=LinearMean(3)), Raises(V, r"^mean: .*\bx\b")),
    C("set_train_data/new-d-against-ard", lambda t: gp(kernel=RBF(ard_dims=2)).set_train_data(*data(d=3)),
      Raises(V, r"^kernel: .*ard_dims")),
    C("set_train_data/batch-against-kernel", lambda t: batched(RBF(batch_shape=(2,))).set_train_data(*data(batch=(3,))),
      Raises(V, r"^kernel: batch_shape \(2,\)")),
    C("set_train_data/meta", lambda t: gp().set_train_data(X.to("meta"), Y.to("meta")), Raises(V, r"^x: .*meta")),

    # ----- kernels, likelihoods, means: constructor and setter arguments ----------------------------
    C("kernel/lengthscale-string", lambda t: RBF(lengthscale="1"), Raises(T, r"^lengthscale: expected a positive")),
    C("kernel/lengthscale-two-values-no-ard", lambda t: RBF(lengthscale=[1.0, 2.0]),
      Raises(V, r"^lengthscale: .*broadcastable to shape \(1, 1\)")),
    C("kernel/lengthscale-count-vs-ard", lambda t: RQ(ard_dims=3, lengthscale=[1.0, 2.0]),
      Raises(V, r"^lengthscale: .*\(1, 3\)")),
    C("kernel/period-vector-no-ard", lambda t: Periodic(period=[1.0, 2.0]), Raises(V, r"^period: ")),
    C("kernel/alpha-complex", lambda t: RQ(alpha=1j), Raises(T, r"^alpha: ")),
    C("kernel/ard-dims-bool", lambda t: RBF(ard_dims=True), Raises(V, r"^ard_dims: expected a positive int")),
    C("kernel/nu-string", lambda t: Matern(nu="2.5"), Raises(V, r"^nu: expected one of")),
    C("kernel/nu-None", lambda t: Matern(nu=None), Raises(V, r"^nu: ")),
    C("kernel/active-dims-int", lambda t: RBF(active_dims=1), Raises(T, r"^active_dims: expected a list")),
    C("kernel/active-dims-string", lambda t: RBF(active_dims="01"), Raises(T, r"^active_dims: ")),
    C("kernel/batch-shape-int", lambda t: RBF(batch_shape=2), Raises(T, r"^batch_shape: expected a tuple")),
    C("kernel/batch-shape-zero", lambda t: Periodic(batch_shape=(0,)), Raises(V, r"^batch_shape: expected sizes >= 1")),
    C("kernel/batch-shape-float", lambda t: RBF(batch_shape=(2.5,)), Raises(T, r"^batch_shape: ")),
    C("kernel/setter-string", lambda t: setattr(Scale(RBF()), "outputscale", "big"), Raises(T, r"^outputscale: ")),
    C("likelihood/noise-string", lambda t: Gaussian(noise="0.1"), Raises(T, r"^noise: expected a positive")),
    C("likelihood/noise-vector-unbatched", lambda t: Gaussian(noise=[0.1, 0.2]), Raises(V, r"^noise: .*shape \(\)")),
    C("likelihood/noise-floor-infinite", lambda t: Gaussian(noise_floor=float("inf")), Raises(V, r"^noise_floor: ")),
    C("likelihood/batch-shape-negative", lambda t: Gaussian(batch_shape=(-1,)), Raises(V, r"^batch_shape: ")),
    C("likelihood/fixed-noise-complex", lambda t: FixedNoise(torch.tensor([0.1 + 1j])),
      Raises(T, r"^noise: expected real")),
    C("mean/constant-nan", lambda t: Constant(float("nan")), Raises(V, r"^constant: expected finite")),
    C("mean/constant-string", lambda t: Constant("a"), Raises(T, r"^constant: ")),
    C("mean/constant-vector-unbatched", lambda t: Constant([1.0, 2.0]), Raises(V, r"^constant: .*broadcastable")),
    C("mean/constant-setter-infinite", lambda t: setattr(Constant(), "constant", float("inf")),
      Raises(V, r"^constant: expected finite")),
    C("mean/linear-input-dims-bool", lambda t: LinearMean(True), Raises(V, r"^input_dims: ")),
    C("mean/linear-batch-shape-int", lambda t: LinearMean(2, batch_shape=3), Raises(T, r"^batch_shape: ")),

    # ----- fit ------------------------------------------------------------------------------------------
    C("fit/callback-not-callable", lambda t: fg.fit(gp(), iters=1, progress=False, callback=5),
      Raises(T, r"^callback: expected a function")),
    C("fit/seed-string", lambda t: fg.fit(gp(), iters=1, progress=False, seed="0"),
      Raises(T, r"^seed: expected an int")),
    C("fit/seed-float", lambda t: fg.fit(gp(), iters=1, progress=False, seed=1.5), Raises(T, r"^seed: ")),
    C("fit/model-None", lambda t: fg.fit(None, progress=False), Raises(T, r"^model: expected")),

    # ----- posterior / predict -------------------------------------------------------------------------
    C("posterior/x-infinite", lambda t: model().posterior(XT.index_fill(0, torch.tensor([1]), float("inf"))),
      Raises(V, r"^x: expected finite")),
    C("posterior/x-complex", lambda t: model().posterior(XT.to(torch.complex128)), Raises(T, r"^x: expected real")),
    C("posterior/x-numpy-strings", lambda t: model().posterior(np.full((3, 2), "1.0")),
      Raises(T, r"^x: .*dtype <U3")),
    C("posterior/x-meta", lambda t: model().posterior(XT.to("meta")), Raises(V, r"^x: .*meta")),
    C("posterior/x-None", lambda t: model().predict(None), Raises(T, r"^x: expected a tensor")),
    C("posterior/x-0d", lambda t: model().posterior(torch.tensor(0.5)), Raises(V, r"^x: expected shape")),
    C("posterior/x-overflows", lambda t: model().posterior(XT * 1e200), Raises(V, r"^x: values up to")),
    C("posterior/x-dataframe-text", lambda t: model().posterior(text_frame()), Raises(T, r"^x: .*'b'")),
    C("posterior/x-sparse", lambda t: model().posterior(XT.to_sparse()), Raises(T, r"^x: expected a dense")),
    C("predict/noise-with-gaussian-likelihood", lambda t: model().predict(XT, noise=torch.ones(5)),
      Raises(V, r"^noise: .*FixedNoise")),
    C("predict/fixed-noise-nan", lambda t: fixed_noise_model().predict(XT, noise=torch.tensor([0.1] * 4 + [np.nan])),
      Raises(V, r"^noise: expected 5 finite")),
    C("predict/fixed-noise-string", lambda t: fixed_noise_model().predict(XT, noise="0.1"), Raises(T, r"^noise: ")),
    C("posterior/confidence-level-string", lambda t: model().posterior(XT).confidence_region("0.9"),
      Raises(V, r"^level: ")),
    C("posterior/sample-count-bool", lambda t: model().posterior(XT).sample(True), Raises(V, r"^num_samples: ")),
    C("posterior/sample-generator-seed", lambda t: model().posterior(XT).sample(2, generator=0),
      Raises(T, r"^generator: expected a torch.Generator")),
    C("posterior/log-prob-wrong-shape", lambda t: model().posterior(XT).log_prob(torch.zeros(7, dtype=F64)),
      Raises(V, r"^y: expected values of shape \(5,\)")),

    # ----- solver configurations -------------------------------------------------------------------------
    C("solver/cg-tol-nan", lambda t: fg.CG(tol=float("nan")), Raises(V, r"^tol: expected a finite")),
    C("solver/cg-tol-infinite", lambda t: fg.CG(tol=float("inf")), Raises(V, r"^tol: expected a finite")),
    C("solver/cg-eval-tol-nan", lambda t: fg.CG(eval_tol=float("nan")), Raises(V, r"^eval_tol: ")),
    C("solver/cg-max-iters-bool", lambda t: fg.CG(max_iters=True), Raises(T, r"^max_iters: expected an int")),
    C("solver/cg-backend-None", lambda t: fg.CG(backend=None), Raises(V, r"^backend: expected one of")),
    C("solver/cholesky-jitter-nan", lambda t: fg.Cholesky(jitter=float("nan")), Raises(V, r"^jitter: ")),
    C("solver/cholesky-jitter-infinite", lambda t: fg.Cholesky(jitter=float("inf")), Raises(V, r"^jitter: ")),
    C("solver/cholesky-max-tries-zero", lambda t: fg.Cholesky(max_tries=0), Raises(V, r"^max_tries: expected > 0")),
    C("solver/auto-max-n-float", lambda t: fg.Auto(max_cholesky_n=2.5), Raises(T, r"^max_cholesky_n: expected an int")),
    C("solver/auto-max-n-None", lambda t: fg.Auto(max_cholesky_n=None), Raises(T, r"^max_cholesky_n: ")),
    C("solver/precond-rank-string", lambda t: fg.PivotedCholesky("10"), Raises(T, r"^rank: expected an int")),

    # ----- GPRegressor (scikit-learn) ----------------------------------------------------------------------
    # text and category columns of a DataFrame are categorical inputs by default (categorical=None)
    C("sklearn/fit-dataframe-text-column-one-level", lambda t: sk(text_frame(30), SY),
      Raises(V, r"^categorical: column 'b' holds only one level")),
    C("sklearn/fit-dataframe-text-column-not-categorical", lambda t: sk(text_frame(30), SY, categorical=[]),
      Raises(V, r"^X: .*non-numeric.*'b'.*categorical=")),
    C("sklearn/fit-dataframe-categorical-unknown-level",
      lambda t: sk(pd().DataFrame({"c": pd().Categorical(["u", "v"] * 15)}), SY).predict(
          pd().DataFrame({"c": pd().Categorical(["w"])})), Raises(V, r"level 'w'")),
    C("sklearn/predict-dataframe-text-column", lambda t: sk(pd().DataFrame(SX, columns=["a", "b"]), SY)
      .predict(text_frame()), Raises(V, r"^X: .*'b'")),
    C("sklearn/fit-string-array", lambda t: sk(np.full((30, 2), "a"), SY),
      Raises(V, r"could not convert string to float")),
    C("sklearn/fit-empty", lambda t: sk(SX[:0], SY[:0]), Raises(V, r"0 sample")),
    C("sklearn/fit-y-nan", lambda t: sk(SX, np.where(np.arange(30) == 4, np.nan, SY)),
      Raises(V, r"Input y contains NaN")),
    C("sklearn/fit-y-infinite", lambda t: sk(SX, np.where(np.arange(30) == 4, np.inf, SY)),
      Raises(V, r"y contains infinity")),
    C("sklearn/fit-nullable-int-with-NA", lambda t: sk(pd().DataFrame({"a": pd().array([1, None] * 15, dtype="Int64")}),
                                                      SY),
      Raises(V, r"Input X contains NaN")),
    C("sklearn/fit-complex", lambda t: sk(SX + 1j, SY), Raises(V, r"Complex data not supported")),
    C("sklearn/fit-1d-X", lambda t: sk(SX[:, 0], SY), Raises(V, r"Expected 2D array")),
    C("sklearn/fit-3d-X", lambda t: sk(SX[None], SY), Raises(V, r"dim 3")),
    C("sklearn/fit-y-3d", lambda t: sk(SX, SY[:, None, None]), Raises(V, r"dim 3")),
    C("sklearn/fit-y-two-columns-nan", lambda t: sk(SX, np.c_[SY, np.where(SY > 0, np.nan, SY)]),
      Raises(V, r"Input y contains NaN")),
    C("sklearn/fit-y-wrong-length", lambda t: sk(SX, SY[:5]), Raises(V, r"inconsistent numbers of samples")),
    C("sklearn/fit-sparse", lambda t: sk(scipy.sparse.csr_matrix(SX), SY), Raises(T, r"Sparse data")),
    C("sklearn/predict-nan", lambda t: fitted().predict(np.full((2, 2), np.nan)), Raises(V, r"Input X contains NaN")),
    C("sklearn/predict-1d", lambda t: fitted().predict(SX[0]), Raises(V, r"Expected 2D array")),
    C("sklearn/predict-empty", lambda t: fitted().predict(SX[:0]), Raises(V, r"0 sample")),
    C("sklearn/predict-more-features", lambda t: fitted().predict(np.c_[SX, SX]),
      Raises(V, r"X has 4 features.*expecting 2")),
    C("sklearn/sample-y-nan", lambda t: fitted().sample_y(np.full((2, 2), np.nan)), Raises(V, r"Input X contains NaN")),
    C("sklearn/device-meta", lambda t: sk(device="meta"), Raises(V, r"^device: .*'meta'")),
    C("sklearn/kernel-ard-mismatch", lambda t: sk(kernel=RBF(ard_dims=5)), Raises(V, r"^kernel: .*ard_dims")),
    C("sklearn/kernel-None", lambda t: sk(kernel=None), Raises(T, r"^kernel: expected a name")),
    C("sklearn/solver-None", lambda t: sk(solver=None), Raises(T, r"^solver: expected a name")),
    C("sklearn/lr-nan", lambda t: sk(lr=float("nan")), Raises(V, r"^lr: expected a finite")),
    C("sklearn/noise-nan", lambda t: sk(noise=float("nan")), Raises(V, r"^noise: expected finite")),
    C("sklearn/dtype-torch-object", lambda t: sk(dtype=torch.float64), Raises(V, r"^dtype: expected one of")),
    C("sklearn/verbose-string", lambda t: sk(verbose="no"), Raises(T, r"^verbose: expected a bool")),
    C("sklearn/iters-float", lambda t: sk(iters=2.5), Raises(V, r"^iters: expected an int")),
    C("sklearn/unnormalized-huge-X", lambda t: sk(SX * 1e200, normalize_x=False), Raises(V, r"^x: values up to")),

    # ----- command line ------------------------------------------------------------------------------------
    C("cli/empty-file", lambda t: fit_cli(t, ""), Exits(1, r"DATA: .* is empty")),
    C("cli/header-only", lambda t: fit_cli(t, "a,b,y\n"), Exits(1, r"has 0 data row")),
    C("cli/duplicate-column-names", lambda t: fit_cli(t, "a,a,y\n1,2,3\n"), Exits(1, r"duplicate column names: a")),
    C("cli/ragged-row", lambda t: fit_cli(t, GOOD_CSV + "1,2\n"), Exits(1, r"line 22 has 2 fields")),
    C("cli/features-only-commas", lambda t: fit_cli(t, GOOD_CSV, "--features", ","),
      Exits(1, r"--features: expected comma")),
    C("cli/features-include-target", lambda t: fit_cli(t, GOOD_CSV, "--features", "a,y"),
      Exits(1, r"--features: the target column 'y'")),
    C("cli/features-repeated", lambda t: fit_cli(t, GOOD_CSV, "--features", "a,a"),
      Exits(1, r"--features: a column is named twice")),
    C("cli/target-is-the-only-column", lambda t: fit_cli(t, "y\n1\n2\n3\n"),
      Exits(1, r"no columns besides the target")),
    C("cli/infinite-value", lambda t: fit_cli(t, GOOD_CSV + "inf,1,2\n"), Exits(1, r"'a' \(line 22: 'inf'\)")),
    C("cli/nan-value", lambda t: fit_cli(t, GOOD_CSV + "1,nan,2\n"), Exits(1, r"'b' \(line 22: 'nan'\)")),
    C("cli/blank-value", lambda t: fit_cli(t, GOOD_CSV + "1,2,\n"), Exits(1, r"--target: .*'y' \(line 22: ''\)")),
    C("cli/not-utf8", lambda t: fit_bytes(t, b"a,y\n\xff,1\n"), Exits(1, r"DATA: cannot read .*utf-8")),
    C("cli/data-is-a-directory", lambda t: run_main(["fit", t, "--target", "y"]), Exits(1, r"DATA: .* is a directory")),
    C("cli/lr-nan", lambda t: fit_cli(t, GOOD_CSV, "--lr", "nan"), Exits(2, r"--lr: expected a number > 0, got 'nan'")),
    C("cli/test-size-nan", lambda t: fit_cli(t, GOOD_CSV, "--test-size", "nan"),
      Exits(2, r"--test-size: expected a fraction")),
    C("cli/iters-fraction", lambda t: fit_cli(t, GOOD_CSV, "--iters", "1.5"),
      Exits(2, r"--iters: expected an integer")),
    C("cli/test-file-header-only", lambda t: fit_cli(t, GOOD_CSV, "--test", write(t / "t.csv", "a,b,y\n")),
      Exits(1, r"--test: .* has no data rows")),
    C("cli/test-file-missing-column", lambda t: fit_cli(t, GOOD_CSV, "--test", write(t / "t.csv", "a,y\n1,2\n")),
      Exits(1, r"--test: column\(s\) 'b' not in")),
    C("cli/test-file-text", lambda t: fit_cli(t, GOOD_CSV, "--test", write(t / "t.csv", "a,b,y\n1,x,2\n")),
      Exits(1, r"--test: non-numeric .*'b'")),
    C("cli/out-is-a-directory", lambda t: fit_cli(t, GOOD_CSV, "--iters", "1", "-q", "--out", t),
      Exits(1, r"--out: cannot write .* is a directory")),
    C("cli/predict-sidecar-not-json", lambda t: cli_predict(t, "{not json"),
      Exits(1, r"MODEL: cannot read .*m.fgp.json")),
    C("cli/predict-sidecar-wrong-format", lambda t: cli_predict(t, {**META, "format": "other"}),
      Exits(1, r"is not flashgp fit metadata")),
    C("cli/predict-model-not-a-zip", lambda t: cli_predict(t, META, model_bytes=b"junk"),
      Exits(1, r"MODEL: cannot load .*not a flashgp model file")),
    C("cli/predict-data-header-only", lambda t: cli_predict(t, META, data_text="a,b\n"),
      Exits(1, r"DATA: .* has no data rows")),

    # ----- fg.save / fg.load ---------------------------------------------------------------------------------
    C("load/directory", lambda t: fg.load(t), Raises(fg.ModelFileError, r"a directory, not a flashgp model")),
    C("load/plain-pickle", lambda t: load_bytes(t, pickle.dumps({"a": 1})),
      Raises(fg.ModelFileError, r"not a flashgp model file")),
    C("load/zip-without-tensors", lambda t: fg.load(archive(t, {"config.json": saved_model(t)[0]})),
      Raises(fg.ModelFileError, r"found \['config.json'\]")),
    C("load/zip-with-extra-entry", lambda t: fg.load(archive(t, {"config.json": "{}", "tensors.pt": b"", "x": "y"})),
      Raises(fg.ModelFileError, r"expected the entries")),
    C("load/config-is-a-list", lambda t: fg.load(archive(t, {"config.json": [1], "tensors.pt": saved_model(t)[1]})),
      Raises(fg.ModelFileError, r"lacks format")),
    C("load/kernel-config-a-string", lambda t: with_config(t, lambda c: c.update(kernel="RBF")),
      Raises(fg.ModelFileError, r"kernel: expected a dict")),
    C("load/nan-hyperparameter", lambda t: with_tensors(t, lambda s: set_nan(s, "kernel.raw_outputscale")),
      Raises(fg.ModelFileError, r"NaN or infinity in the tensors \['kernel.raw_outputscale'\]")),
    C("load/short-train-y", lambda t: with_tensors(t, lambda s: s.update(train_y=s["train_y"][:5])),
      Raises(fg.ModelFileError, r"y: expected shape \(20,\)")),
    C("load/wrong-parameter-shape", lambda t: with_tensors(t, lambda s: s.update(
        {"kernel.base.raw_lengthscale": torch.zeros(1, 3, dtype=F64)})),
      Raises(fg.ModelFileError, r"size mismatch for kernel.base.raw_lengthscale")),
    C("load/device-meta", lambda t: fg.load(t / "m.fgp", device="meta"), Raises(V, r"^device: .*'meta'")),
    C("load/bytes-path", lambda t: fg.load(b"m.fgp"), Raises(T, r"^path: expected a str")),
    C("save/missing-folder", lambda t: fg.save(model(), t / "no" / "m.fgp"),
      Raises(FileNotFoundError, r"^path: the folder")),
    C("save/nan-parameter", save_nan_model, Raises(V, r"^model: NaN or infinity in kernel.base.raw_lengthscale")),

    # ----- inputs that must give the correct result --------------------------------------------------------------
    C("ok/gp-x-int64", lambda t: (gp(X.round().long(), Y).predict(XT), gp(X.round().to(DEFAULT), Y).predict(XT)),
      Returns(same(dtype=DEFAULT))),
    C("ok/gp-x-bool", lambda t: (gp(X > 0, Y).predict(XT), gp((X > 0).to(DEFAULT), Y).predict(XT)),
      Returns(same(dtype=DEFAULT))),
    C("ok/gp-x-float16", lambda t: (gp(X.half(), Y).predict(XT), gp(X.half().float(), Y).predict(XT)),
      Returns(same(dtype=torch.float32))),
    C("ok/gp-x-bfloat16", lambda t: (gp(X.bfloat16(), Y).predict(XT), gp(X.bfloat16().float(), Y).predict(XT)),
      Returns(same(dtype=torch.float32))),
    C("ok/gp-pandas-x-and-y", lambda t: (gp(pd().DataFrame(X.numpy()), pd().Series(Y.numpy())).predict(XT),
                                         gp().predict(XT)), Returns(same(dtype=F64))),
    C("ok/gp-x-object-numbers", lambda t: (gp(X.numpy().astype(object), Y).predict(XT), gp().predict(XT)),
      Returns(same(dtype=F64))),
    C("ok/gp-x-non-contiguous", lambda t: (gp(X.T.contiguous().T, Y).predict(XT), gp().predict(XT)),
      Returns(same(1e-12))),
    C("ok/gp-x-read-only-numpy", lambda t: no_warnings(lambda: (gp(np.broadcast_to(X.numpy(), X.shape), Y).predict(XT),
                                                                 gp().predict(XT))), Returns(same())),
    C("ok/gp-y-int", lambda t: (gp(X, Y.round().long()).predict(XT), gp(X, Y.round()).predict(XT)),
      Returns(same(dtype=F64))),
    C("ok/gp-x-float32-y-float64", lambda t: (gp(X.float(), Y).predict(XT), gp(X.float(), Y.float()).predict(XT)),
      Returns(same(dtype=torch.float32))),
    C("ok/set-train-data-float32-on-float64-model", set_train_float32, Returns(same(dtype=F64))),
    C("ok/gp-x-requires-grad", fit_requires_grad_x, Returns(same())),
    C("ok/gp-one-training-point", one_point_closed_form, Returns(same(1e-12))),
    C("ok/cg-all-training-points-identical", cg_identical_points, Returns(same(1e-5))),
    C("ok/kernel-numpy-ard-dims", lambda t: (gp(kernel=RBF(ard_dims=np.int64(2))).predict(XT),
                                             gp(kernel=RBF(ard_dims=2)).predict(XT)), Returns(same())),
    C("ok/kernel-numpy-active-dims", lambda t: (gp(kernel=RBF(active_dims=np.array([1]))).predict(XT),
                                                gp(kernel=RBF(active_dims=[1])).predict(XT)), Returns(same())),
    C("ok/kernel-numpy-power", lambda t: (Polynomial(power=np.int64(3)).double()(XT),
                                          Polynomial(power=3).double()(XT)), Returns(same())),
    C("ok/solver-numpy-scalars-save-and-load", numpy_solvers, Returns(check_numpy_solvers)),
    C("ok/posterior-x-int", lambda t: (model().posterior(XT.round().int()), model().posterior(XT.round())),
      Returns(same(dtype=F64))),
    C("ok/posterior-float32-on-float64-model", lambda t: (model().posterior(XT.float()),
                                                          model().posterior(XT.float().double())),
      Returns(same(dtype=F64))),
    C("ok/posterior-non-contiguous", lambda t: (model().posterior(XT.T.contiguous().T), model().posterior(XT)),
      Returns(same(1e-12))),
    C("ok/posterior-pandas", lambda t: (model().posterior(pd().DataFrame(XT.numpy())), model().posterior(XT)),
      Returns(same())),
    C("ok/posterior-nested-lists", lambda t: (model().posterior(XT.tolist()), model().posterior(XT)), Returns(same())),
    C("ok/posterior-requires-grad", posterior_of_requires_grad, Returns(same(1e-12))),
    C("ok/sample-numpy-count", sample_numpy_count, Returns(same())),
    C("ok/sklearn-one-sample", lambda t: (sk(SX[:1], SY[:1]).predict(SX[:1]), SY[:1]), Returns(same(1e-10))),
    C("ok/sklearn-object-numbers", lambda t: sk_pair(SX.astype(object)), Returns(same())),
    C("ok/sklearn-int-X", lambda t: sk_pair(SX.round().astype(int), x_ref=SX.round()), Returns(same())),
    C("ok/sklearn-float32", lambda t: sk_pair(SX.astype(np.float32), SY.astype(np.float32),
                                              SX.astype(np.float32).astype(float), SY.astype(np.float32).astype(float)),
      Returns(same())),
    C("ok/sklearn-y-column-vector", sk_column_vector_y, Returns(same())),
    C("ok/sklearn-constant-column", lambda t: (sk(np.c_[SX, np.full(30, 3.0)]).predict(np.c_[SX[:5], np.full(5, 3.0)]),
                                               sk().predict(SX[:5])), Returns(same(1e-10))),
    C("ok/sklearn-constant-y", sk_constant_y, Returns(same(1e-10))),
    C("ok/sklearn-huge-X", lambda t: (sk(SX * 1e200).predict(SX[:5] * 1e200), sk().predict(SX[:5])),
      Returns(same(1e-8))),
    # a bool column is categorical by default: the same model as 0/1 codes named categorical
    C("ok/sklearn-pandas-bool-column", lambda t: (
        sk(pd().DataFrame({"a": SX[:, 0], "b": SX[:, 1] > 0}), SY).predict(pd().DataFrame({"a": SX[:5, 0], "b": SX[:5, 1] > 0})),
        sk(np.c_[SX[:, 0], SX[:, 1] > 0].astype(float), SY, categorical=[1]).predict(np.c_[SX[:5, 0], SX[:5, 1] > 0].astype(float))),
      Returns(same(1e-10))),
    C("ok/sklearn-fortran-order", lambda t: sk_pair(np.asfortranarray(SX)), Returns(same(1e-10))),
    C("ok/cli-constant-target", lambda t: cli_fit_ok(t, "a,y\n" + "".join(f"{i},5\n" for i in range(10))),
      Returns(check_cli_numbers)),
    C("ok/cli-huge-feature-values",
      lambda t: cli_fit_ok(t, "a,y\n" + "".join(f"{i}e300,{i % 3}\n" for i in range(1, 10))),
      Returns(check_cli_numbers)),
]


@pytest.fixture
def deadline():
    """Turn a hang into a failure: SIGALRM after 60 s (Unix only)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def hang(signum, frame):
        raise TimeoutError("the call did not return within 60 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_case_ids_are_distinct_and_enough():
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)
    assert len(ids) >= 50


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, deadline):
    if isinstance(case.expect, Raises):
        assert issubclass(case.expect.exc, (ValueError, TypeError, FileNotFoundError))
    run_case(case, tmp_path)


def test_assert_finite_catches_hidden_nan():
    """The helper itself: a NaN anywhere in a result (a posterior variance, a nested list) fails."""
    post = model().posterior(XT)
    post._variance = post.variance.clone().index_fill(0, torch.tensor([1]), float("nan"))
    for bad in (post, [np.ones(2), (1.0, float("nan"))], {"a": torch.tensor([np.inf])}):
        with pytest.raises(AssertionError):
            assert_finite(bad)
