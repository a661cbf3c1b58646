# Outputs never destroy inputs: every output path of `flashgp fit` / `flashgp predict` that names
# an input (or another output) -- the same path, ./ spelling, a symbolic link, a hard link -- is
# refused with exit 2 before any work; and every output is written atomically, so a full disk
# or an unwritable folder leaves the previous file whole and no temporary file behind.
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from bad_input_helpers import run_main, write
from cli_estimator_helpers import (CSV, data_csv, failing_fsync, fit_model, folder_listing, legacy_pair, predict,
                                   read_column)

from flashgp import bundle
from flashgp.outputs import OutputPathError, atomic_output, check_outputs, same_file

REPO = Path(__file__).resolve().parents[2]


def refused(result, arg: str, other: str) -> None:
    """Exit 2, one 'flashgp: error:' line naming the output argument and what it collides with."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"flashgp: error: {arg}: ") and f"same file as {other}" in lines[0], lines[0]


# ----- fit -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["same", "dot", "symlink", "hardlink"])
@pytest.mark.parametrize("flag", ["--out", "--checkpoint"])
def test_fit_output_naming_the_data_is_refused_and_the_data_kept(tmp_path, flag, spelling):
    data = data_csv(tmp_path)
    target = {"same": str(data), "dot": os.path.join(str(tmp_path), ".", "d.csv")}.get(spelling)
    if spelling == "symlink":
        target = tmp_path / "link.csv"
        os.symlink(data, target)
    elif spelling == "hardlink":
        target = tmp_path / "hard.csv"
        os.link(data, target)
    before = folder_listing(tmp_path)
    refused(run_main(["fit", data, "--target", "y", "--iters", 2, flag, target]), flag, "DATA")
    assert data.read_text() == CSV and folder_listing(tmp_path) == before


def test_fit_output_naming_the_test_file_or_the_other_output_is_refused(tmp_path):
    data, test = data_csv(tmp_path), data_csv(tmp_path, "t.csv")
    refused(run_main(["fit", data, "--target", "y", "--test", test, "--out", test]), "--out", "--test")
    refused(run_main(["fit", data, "--target", "y", "--out", tmp_path / "m.fgp", "--checkpoint",
                      tmp_path / "m.fgp"]), "--checkpoint", "--out")
    assert test.read_text() == CSV and not (tmp_path / "m.fgp").exists()


def test_fit_through_a_symlinked_data_file_into_its_target_is_refused(tmp_path):
    data = data_csv(tmp_path)
    os.symlink(data, tmp_path / "link.csv")
    refused(run_main(["fit", tmp_path / "link.csv", "--target", "y", "--out", data]), "--out", "DATA")
    assert data.read_text() == CSV


# ----- predict ---------------------------------------------------------------------------------------

def test_predict_output_naming_the_model_the_data_or_a_sidecar_is_refused(tmp_path):
    model = fit_model(tmp_path)
    model_bytes = model.read_bytes()
    refused(predict(tmp_path, model, out="m.fgp"), "--out", "MODEL")
    refused(predict(tmp_path, model, out="d.csv"), "--out", "DATA")
    os.link(model, tmp_path / "again.fgp")
    refused(predict(tmp_path, model, out="again.fgp"), "--out", "MODEL")
    old = legacy_pair(tmp_path)
    sidecar = Path(f"{old}.json").read_text()
    refused(predict(tmp_path, old, out="old.fgp.json"), "--out", "the sidecar of MODEL")
    assert model.read_bytes() == model_bytes and Path(f"{old}.json").read_text() == sidecar
    assert (tmp_path / "d.csv").read_text() == CSV


def test_a_missing_input_is_reported_as_missing_not_as_a_collision(tmp_path):
    code, _, err = run_main(["predict", tmp_path / "m.fgp", tmp_path / "x.csv", "--out", tmp_path / "x.csv"])
    assert code == 1 and "DATA: no such file" in err


def test_check_outputs_and_same_file_directly(tmp_path):
    a = write(tmp_path / "a", "1")
    os.symlink(a, tmp_path / "s")
    assert same_file(a, tmp_path / "s") and same_file(tmp_path / "new", str(tmp_path / "." / "new"))
    assert not same_file(a, tmp_path / "new")
    check_outputs({"--out": tmp_path / "new", "--x": None}, {"IN": a, "GONE": tmp_path / "gone"})
    with pytest.raises(OutputPathError, match=r"^--out: .* same file as IN .*destroy the input IN"):
        check_outputs({"--out": tmp_path / "s"}, {"IN": a})


# ----- atomic writes ---------------------------------------------------------------------------------

def test_predictions_on_a_full_disk_leave_the_previous_file(tmp_path, monkeypatch):
    model = fit_model(tmp_path)
    assert predict(tmp_path, model)[0] == 0
    previous = (tmp_path / "p.csv").read_bytes()
    before = folder_listing(tmp_path)
    failing_fsync(monkeypatch)
    code, _, err = predict(tmp_path, model, "--device", "cpu")
    assert code == 1 and "--out: cannot write" in err and "No space left" in err
    assert str(tmp_path / "p.csv") in err and ".tmp" not in err  # names the file, not the temporary one
    assert (tmp_path / "p.csv").read_bytes() == previous and folder_listing(tmp_path) == before


def test_model_on_a_full_disk_leaves_the_previous_model(tmp_path, monkeypatch):
    model = fit_model(tmp_path)
    previous = model.read_bytes()
    before = folder_listing(tmp_path)
    failing_fsync(monkeypatch)
    code, _, err = run_main(["fit", tmp_path / "d.csv", "--target", "y", "--iters", 2, "-q", "--out", model])
    assert code == 1 and "--out: cannot write" in err and "No space left" in err and ".tmp" not in err
    assert model.read_bytes() == previous and folder_listing(tmp_path) == before


def test_a_real_file_size_limit_during_predict_keeps_the_previous_predictions(tmp_path):
    """RLIMIT_FSIZE makes writes past a size fail (EFBIG) as a full disk does, in a subprocess."""
    resource = pytest.importorskip("resource")
    model = fit_model(tmp_path)
    write(tmp_path / "big.csv", "a,b,y\n" + "1.5,0.5,1\n" * 3000)
    write(tmp_path / "p.csv", "previous predictions\n")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        from flashgp.cli import main
        sys.exit(main(["predict", {str(model)!r}, {str(tmp_path / 'big.csv')!r}, "--out",
                       {str(tmp_path / 'p.csv')!r}, "-q", "--device", "cpu"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--out: cannot write" in proc.stderr, proc.stderr
    assert (tmp_path / "p.csv").read_text() == "previous predictions\n"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    del resource


def test_an_unwritable_folder_names_the_output_not_a_temporary_file(tmp_path, monkeypatch):
    model = fit_model(tmp_path)

    def mkstemp(dir=None, prefix="", suffix=""):  # what an unwritable folder gives (even as root here)
        raise PermissionError(13, "Permission denied", os.path.join(dir, f"{prefix}x1y2{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    code, _, err = predict(tmp_path, model)
    assert code == 1 and f"{tmp_path / 'p.csv'}: Permission denied" in err and ".tmp" not in err
    code, _, err = run_main(["fit", tmp_path / "d.csv", "--target", "y", "--iters", 1, "-q", "--out", model])
    assert code == 1 and f"--out: cannot write {model}: Permission denied" in err and ".tmp" not in err


def test_atomic_output_follows_a_symlink_keeps_the_mode_and_cleans_up(tmp_path):
    target = write(tmp_path / "real.csv", "old\n")
    target.chmod(0o640)
    os.symlink(target, tmp_path / "link.csv")
    with atomic_output(tmp_path / "link.csv") as handle:
        handle.write("new\n")
    assert (tmp_path / "link.csv").is_symlink() and target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError):
        with atomic_output(target) as handle:
            handle.write("half")
            raise RuntimeError("stop")
    assert target.read_text() == "new\n" and folder_listing(tmp_path) == ["link.csv", "real.csv"]
    with pytest.raises(IsADirectoryError):
        with atomic_output(tmp_path):
            pass


def test_fit_out_through_a_symlink_writes_its_target(tmp_path):
    os.symlink(tmp_path / "real.fgp", tmp_path / "current.fgp")
    fit_model(tmp_path, "current.fgp")
    assert (tmp_path / "current.fgp").is_symlink() and bundle.load(tmp_path / "real.fgp").kind == "cli"
    assert predict(tmp_path, tmp_path / "current.fgp")[0] == 0 and read_column(tmp_path / "p.csv", "std").min() > 0
