# fg.CG(reorthogonalize=True) through a model: the mll, its gradient and the posterior mean agree
# with float64 Cholesky as plain CG does, and the setting survives fg.save / fg.load.
import sys

import torch

import flashgp as fg
from flashgp.kernels import RBF, Scale


def test_reorthogonalized_cg_model_matches_cholesky(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(400, 2, generator=gen, dtype=torch.float64)
    y = torch.sin(5 * x.sum(-1)) + 0.05 * torch.randn(400, generator=gen, dtype=torch.float64)
    x_test = torch.rand(20, 2, generator=gen, dtype=torch.float64)
    solver = fg.CG(tol=1e-6, eval_tol=1e-8, probes=30, precond=fg.PivotedCholesky(20), reorthogonalize=True)
    module = sys.modules["flashgp.linalg.inv_quad_logdet"]
    seen, real = [], module.mbcg
    monkeypatch.setattr(module, "mbcg", lambda *a, **kw: seen.append(kw["reorthogonalize"]) or real(*a, **kw))
    results = {}
    for name, s in (("cholesky", fg.Cholesky()), ("reorth", solver)):
        model = fg.ExactGP(x, y, Scale(RBF(ard_dims=2)).double(), solver=s)
        mll = model.mll(generator=torch.Generator().manual_seed(0))
        mll.backward()
        with torch.no_grad():
            mean = model.posterior(x_test).mean
        results[name] = (float(mll.detach()), [p.grad.clone() for p in model.parameters()], mean, model)
    assert abs(results["reorth"][0] - results["cholesky"][0]) < 2e-2  # stochastic log det, 30 probes
    assert torch.allclose(results["reorth"][2], results["cholesky"][2], rtol=1e-5, atol=1e-6)
    grads = zip(results["reorth"][1], results["cholesky"][1])
    assert all(float((g - r).norm() / r.norm().clamp_min(1e-8)) < 0.25 for g, r in grads)
    assert seen == [True, True]  # training and posterior mean solves (certified variance solves: quad_form_cg)
    fg.save(results["reorth"][3], tmp_path / "m.fgp")
    assert fg.load(tmp_path / "m.fgp").solver.reorthogonalize is True
