# Priors in model files and fit checkpoints: fg.save writes them ("priors" in config.json), fg.load
# and checkpoints attach them again, malformed entries are ModelFileErrors, and a resumed MAP fit
# ends where an uninterrupted one does.
import json
import zipfile

import pytest
import torch

import flashgp as fg
from flashgp import io as fgio
from flashgp.checkpoint import load_checkpoint_model
from flashgp.priors import Gamma, HalfCauchy, LogNormal, Normal

F64 = torch.float64


def model(n=20, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=F64)
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=gen, dtype=F64)
    return fg.ExactGP(x, y, fg.kernels.Scale(fg.kernels.RBF(ard_dims=d)), solver=fg.Cholesky())


def with_priors(m):
    m.kernel.base.set_prior("lengthscale", LogNormal(torch.tensor([0.0, 0.5]), 1.0))
    m.kernel.set_prior("outputscale", Normal(0.5, 2.0), raw=True)
    m.likelihood.set_prior("noise", Gamma(1.1, 0.05))
    m.mean.set_prior("constant", HalfCauchy(3.0))
    return m


def lp(m) -> float:
    return float(fg.priors.log_prior(m).detach())


def config_of(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json")), archive.read("tensors.pt")


def rewrite(path, config, tensors):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("tensors.pt", tensors)
    return path


def test_save_and_load_keep_the_priors(tmp_path):
    m = with_priors(model())
    fg.fit(m, iters=3, progress=False, seed=0)
    fg.save(m, tmp_path / "m.fgp")
    loaded = fg.load(tmp_path / "m.fgp")
    assert fg.priors.attached(loaded) == fg.priors.attached(m)
    assert lp(loaded) == lp(m) and fgio.model_config(loaded) == fgio.model_config(m)
    config, _ = config_of(tmp_path / "m.fgp")
    assert config["priors"][0] == {"module": "kernel", "name": "outputscale", "raw": True,
                                   "prior": {"type": "Normal", "loc": 0.5, "scale": 2.0}}
    assert config["priors"][1]["prior"] == {"type": "LogNormal", "loc": [0.0, 0.5], "scale": 1.0}
    assert len(config["priors"]) == 4


def test_files_without_priors_have_no_priors_key(tmp_path):
    fg.save(model(), tmp_path / "m.fgp")
    config, _ = config_of(tmp_path / "m.fgp")
    assert "priors" not in config
    assert fg.priors.attached(fg.load(tmp_path / "m.fgp")) == []


def test_loading_to_another_dtype_and_device_keeps_them(tmp_path):
    m = with_priors(model())
    fg.save(m, tmp_path / "m.fgp")
    loaded = fg.load(tmp_path / "m.fgp", device="cpu").float()
    assert fg.priors.log_prior(loaded).dtype == torch.float32
    assert lp(loaded) == pytest.approx(lp(m), rel=1e-5)


def bad_entry(entry):  # in place of the lengthscale's entry
    return lambda priors: priors.__setitem__(1, entry)


def prior_entry(**changes):
    return {"module": "kernel.base", "name": "lengthscale", "raw": False,
            "prior": {"type": "LogNormal", "loc": 0.0, "scale": 1.0}, **changes}


@pytest.mark.parametrize("change, match", [
    (bad_entry(prior_entry(prior={"type": "Evil", "code": "import os"})), r"priors\[1\].*unknown type 'Evil'"),
    (bad_entry(prior_entry(prior={"type": "Normal", "loc": 0.0, "scale": -1.0})), r"Normal: scale: expected finite numbers > 0"),
    (bad_entry(prior_entry(prior={"type": "Normal", "loc": "x", "scale": 1.0})), r"loc: expected a number"),
    (bad_entry(prior_entry(prior=[1])), r"priors\[1\].*expected a dict"),
    (bad_entry(prior_entry(module="kernel.nothing")), r"priors\[1\]: module 'kernel.nothing' is not a kernel"),
    (bad_entry(prior_entry(module="")), r"module '' is not a kernel, likelihood or mean"),
    (bad_entry(prior_entry(module=3)), r"module 3 is not"),
    (bad_entry(prior_entry(name="lenghtscale")), r"RBF has no hyperparameter 'lenghtscale'"),
    (bad_entry(prior_entry(name=None)), r"expected a str name"),
    (bad_entry(prior_entry(raw="no")), r"raw true or false"),
    (bad_entry(prior_entry(prior={"type": "Normal", "loc": [0.0, 0.0, 0.0], "scale": 1.0})), r"does not broadcast"),
    (bad_entry({"module": "kernel.base", "name": "lengthscale"}), r"priors\[1\]: expected a dict with the keys"),
    (bad_entry([]), r"priors\[1\]: expected a dict"),
    (lambda priors: priors.append(dict(priors[1])), r"priors\[4\]: expected a str name \(once per module\)"),
    (lambda priors: priors[3].update(raw=True), r"raw: Constant.constant is a plain parameter"),
])
def test_malformed_priors_are_model_file_errors(change, match, tmp_path):
    fg.save(with_priors(model()), tmp_path / "m.fgp")
    config, tensors = config_of(tmp_path / "m.fgp")
    change(config["priors"])
    with pytest.raises(fg.ModelFileError, match=r"(config.json|the stored model cannot be rebuilt): .*" + match):
        fg.load(rewrite(tmp_path / "bad.fgp", config, tensors))


def test_a_priors_key_that_is_not_a_list_is_refused(tmp_path):
    fg.save(model(), tmp_path / "m.fgp")
    config, tensors = config_of(tmp_path / "m.fgp")
    for value in ({"a": 1}, None, "x"):
        config["priors"] = value
        with pytest.raises(fg.ModelFileError, match=r"priors: expected a list"):
            fg.load(rewrite(tmp_path / "bad.fgp", config, tensors))
    config["priors"] = []
    assert fg.priors.attached(fg.load(rewrite(tmp_path / "empty.fgp", config, tensors))) == []


def test_a_model_config_may_not_claim_the_priors_key(monkeypatch):
    m = model()
    original = fg.ExactGP.config
    monkeypatch.setattr(fg.ExactGP, "config_keys", fg.ExactGP.config_keys | {"priors"})
    monkeypatch.setattr(fg.ExactGP, "config", lambda self: {**original(self), "priors": []})
    with pytest.raises(TypeError, match=r"none of them .*'priors'"):
        fgio.model_config(m)


# ----- checkpoints --------------------------------------------------------------------------------

def test_a_resumed_map_fit_ends_where_an_uninterrupted_one_does(tmp_path):
    reference = with_priors(model())
    expected = fg.fit(reference, iters=8, progress=False, seed=3)
    path = tmp_path / "run.ckpt"
    first = with_priors(model())
    fg.fit(first, iters=4, progress=False, seed=3, checkpoint=path)
    stored = load_checkpoint_model(path)
    assert fg.priors.attached(stored) == fg.priors.attached(first) and lp(stored) == lp(first)
    resumed = with_priors(model())
    history = fg.fit(resumed, iters=8, progress=False, seed=3, checkpoint=path, resume=True)
    assert history.start_step == 4 and history.loss == pytest.approx(expected.loss, rel=1e-12)
    for (name, a), (_, b) in zip(resumed.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0, msg=name)


@pytest.mark.parametrize("change", ["none", "other", "extra"])
def test_resuming_with_other_priors_is_refused(change, tmp_path):
    path = tmp_path / "run.ckpt"
    fg.fit(with_priors(model()), iters=2, progress=False, seed=0, checkpoint=path)
    resumed = with_priors(model())
    if change == "none":
        resumed = model()
    elif change == "other":
        resumed.likelihood.set_prior("noise", Gamma(1.1, 0.5))
    else:
        resumed.kernel.base.set_prior("lengthscale", None)
    with pytest.raises(ValueError, match=r"written for a different model \(priors differ\)"):
        fg.fit(resumed, iters=4, progress=False, seed=0, checkpoint=path, resume=True)


def test_a_checkpoint_without_priors_refuses_a_model_with_them(tmp_path):
    path = tmp_path / "run.ckpt"
    fg.fit(model(), iters=2, progress=False, seed=0, checkpoint=path)
    with pytest.raises(ValueError, match=r"priors differ"):
        fg.fit(with_priors(model()), iters=4, progress=False, seed=0, checkpoint=path, resume=True)


def test_a_checkpoint_with_malformed_priors_is_a_model_file_error(tmp_path):
    path = tmp_path / "run.ckpt"
    fg.fit(with_priors(model()), iters=2, progress=False, seed=0, checkpoint=path)
    config, tensors = config_of(path)
    config["model"]["priors"][2]["prior"] = {"type": "Gamma", "concentration": 0.0, "rate": 1.0}
    rewrite(path, config, tensors)
    with pytest.raises(fg.ModelFileError, match=r"priors\[2\] \(likelihood.noise\): Gamma: concentration"):
        fg.fit(with_priors(model()), iters=4, progress=False, seed=0, checkpoint=path, resume=True)
    with pytest.raises(fg.ModelFileError, match=r"priors\[2\]"):
        load_checkpoint_model(path)
