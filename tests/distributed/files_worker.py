# The worker processes of tests/distributed/test_sharded_files.py: each joins a gloo group through a
# file and, by mode, fits a ShardedExactGP with checkpoints (writing one, or resuming one written by
# another number of processes) or reads a model file with flashgp.distributed.load.
import os
from datetime import timedelta

import torch
import torch.distributed as dist

import flashgp as fg
import flashgp.distributed as fgd

import model_worker as mw
import sharded_worker as w

N = 60


def worker(rank: int, world: int, init_file: str, out_dir: str, mode: str, iters: int) -> None:
    """mode "write": fit ``iters`` steps with a checkpoint every step, then rank 0 saves the model;
    "resume": fit to ``iters`` steps from that checkpoint; "load": the saved file split over the
    group, and its posterior; "wrong": resuming with other data; "split": rank 0 alone sees the
    checkpoint (a node-local path). Every rank reports the error of the last two."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=w.TIMEOUT_S))
    try:
        x, y = w.data(N)
        if mode == "wrong":
            y = y + 0.5
        start, stop = fgd.even_rows(N, rank, world)
        ckpt, saved = os.path.join(out_dir, "fit.ckpt"), os.path.join(out_dir, "model.fgp")
        if mode == "split" and rank > 0:
            os.makedirs(os.path.join(out_dir, f"node{rank}"), exist_ok=True)
            ckpt = os.path.join(out_dir, f"node{rank}", "fit.ckpt")
        out = {}
        if mode == "load":
            model = fgd.load(saved)
            out["rows"] = (model.shards.start, model.shards.stop)
            out["fitted"] = mw.values(model)
            post = model.posterior(mw.test_points())
            out["mean"], out["variance"] = post.mean.clone(), post.variance.clone()
        else:
            model = fgd.ShardedExactGP(x[start:stop], y[start:stop], mw.kernel(), solver=mw.solver())
            out["writes"] = model.writes_checkpoints
            try:
                history = fg.fit(model, iters=iters, lr=mw.LR, seed=mw.FIT_SEED, progress=False,
                                 checkpoint=ckpt, checkpoint_every=1, resume=mode != "write")
            except ValueError as err:
                out["error"] = str(err)
            else:
                out.update(loss=torch.tensor(history.loss), start_step=history.start_step,
                           fitted=mw.values(model))
                if mode == "write" and rank == 0:
                    fg.save(model, saved)
        torch.save(out, os.path.join(out_dir, f"{mode}{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()
