# Files and checkpoints of flashgp.distributed.ShardedExactGP on gloo processes (spawned here, CPU,
# float64, 60 rows): a fit checkpointed on 4 processes resumes on 2 and ends where an uninterrupted
# single-process fit ends; fg.save writes an ExactGP file of all rows, which fg.load reads on one
# process and flashgp.distributed.load splits over 2; a checkpoint of other data is refused.
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flashgp as fg
import flashgp.distributed as fgd

import files_worker as fw
import model_worker as mw
import sharded_worker as w

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")

WRITE_ITERS, ALL_ITERS = 3, 5


def spawn(tmp_path, world: int, mode: str, iters: int = ALL_ITERS) -> list:
    init = tmp_path / f"init-{mode}-{world}"
    mp.spawn(fw.worker, args=(world, str(init), str(tmp_path), mode, iters), nprocs=world, join=True)
    return [torch.load(tmp_path / f"{mode}{r}.pt", weights_only=False) for r in range(world)]


def relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def single_process(iters: int):
    """(losses, fitted values, model) of an uninterrupted single-process fit of ``iters`` steps."""
    torch.set_num_threads(1)
    x, y = w.data(fw.N)
    model = fg.ExactGP(x, y, mw.kernel(), solver=mw.solver())
    history = fg.fit(model, iters=iters, lr=mw.LR, seed=mw.FIT_SEED, progress=False)
    return torch.tensor(history.loss), mw.values(model), model


def test_checkpoint_of_4_processes_resumes_on_2_and_files_are_exact_gp_files(tmp_path):
    written = spawn(tmp_path, 4, "write", WRITE_ITERS)
    assert [res["writes"] for res in written] == [True, False, False, False]  # rank 0 alone writes
    checkpoint = fg.checkpoint.read_checkpoint(tmp_path / "fit.ckpt")
    assert checkpoint.step == WRITE_ITERS and checkpoint.config["model"]["model"] == "ExactGP"
    x, y = w.data(fw.N)
    assert torch.equal(checkpoint.tensors["model"]["train_x"], x)  # all rows, not one shard
    pivots = checkpoint.tensors["precond"]  # the pivot cache, global rows, as one process writes it
    assert int(pivots["n"]) == fw.N and pivots["pivots"].shape == (10,) and int(pivots["pivots"].max()) < fw.N

    resumed = spawn(tmp_path, 2, "resume")
    losses, fitted, _ = single_process(ALL_ITERS)
    for res in resumed:
        assert res["start_step"] == WRITE_ITERS and len(res["loss"]) == ALL_ITERS
        # the resumed fit goes on as an uninterrupted one (reorthogonalized CG: round-off apart)
        assert relative(res["loss"], losses) < 1e-8, (res["loss"], losses)
        for name, value in fitted.items():
            assert relative(res["fitted"][name], value) < 1e-8, (name, res["fitted"][name], value)
        assert all(torch.equal(res["fitted"][k], resumed[0]["fitted"][k]) for k in fitted)
    assert relative(written[0]["loss"], losses[:WRITE_ITERS]) < 1e-8

    # fg.save of the sharded model: an ordinary ExactGP file of all 60 rows
    one = fg.load(tmp_path / "model.fgp")
    assert type(one) is fg.ExactGP and one.num_train == fw.N and torch.equal(one.train_y, y)
    for name, value in written[0]["fitted"].items():
        assert torch.equal(mw.values(one)[name], value), name
    # ... which flashgp.distributed.load splits over 2 processes, predicting as one process does
    loaded = spawn(tmp_path, 2, "load")
    assert [res["rows"] for res in loaded] == [(0, 30), (30, 60)]
    post = one.posterior(mw.test_points())
    for res in loaded:
        assert all(torch.equal(res["fitted"][k], value) for k, value in written[0]["fitted"].items())
        assert relative(res["mean"], post.mean) < 1e-7
        assert relative(res["variance"], post.variance) < 1e-3  # CG's certified bounds vs exact solves


def test_checkpoint_of_other_data_or_not_seen_by_every_process_is_refused(tmp_path):
    spawn(tmp_path, 2, "write", 1)
    for res in spawn(tmp_path, 2, "wrong"):
        assert "different training data" in res["error"] and "train_y" in res["error"]
    # rank 0 sees the checkpoint (step 1), rank 1 a folder of its own without it: neither goes on
    for res in spawn(tmp_path, 2, "split"):
        assert "different steps (rank 0: 1, rank 1: 0)" in res["error"], res.get("error")


def test_even_rows_and_load_errors(tmp_path):
    assert [fgd.even_rows(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(ValueError, match="n: 2 rows"):
        fgd.even_rows(2, 0, 3)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="not initialised"):
            fgd.load(tmp_path / "missing.fgp")
