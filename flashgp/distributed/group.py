# Shard bookkeeping for rows split across the processes of a torch.distributed group: who holds
# which contiguous block of rows, and the three collectives the sharded solvers need (sums of
# per-process partial sums, gathering every process's rows, and slicing with a gathering backward).
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist


class ShardError(RuntimeError):
    """A collective of a sharded computation failed (another process died, left or timed out)."""


@contextlib.contextmanager
def _collective(shards: "Shards | None", what: str):
    """Re-raise a failed collective as a ShardError naming this process and what it was doing."""
    try:
        yield
    except ShardError:
        raise
    except RuntimeError as error:  # DistBackendError and gloo's errors derive from it
        where = "" if shards is None else f" on rank {shards.rank} of {shards.world_size}"
        raise ShardError(f"{what}{where} failed: {error}. Another process of the group probably died, "
                         "left early or is stuck (the group's timeout, init_process_group(timeout=...), "
                         "bounds the wait)") from error


class Shards:
    """The row blocks of a process group: process r holds rows ``starts[r]:starts[r] + counts[r]``
    of n, in rank order (contiguous, possibly uneven). The counts are gathered once, here (a
    collective: every process of ``group`` must construct its Shards together).

    n_local: the rows this process holds; group: a ``torch.distributed`` process group (None:
    the default group, which must be initialised). ``rank``, ``world_size``, ``counts``,
    ``starts``, ``n``, ``start``, ``stop``, ``rows`` (``(start, stop, n)``) describe the split.
    """

    def __init__(self, n_local: int, group=None, device: torch.device | str = "cpu"):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("flashgp.distributed: torch.distributed is not initialised; call "
                               "torch.distributed.init_process_group(...) first (torchrun sets its environment)")
        if n_local < 1:
            raise ValueError(f"n_local: expected at least one row on every process, got {n_local}")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.device = torch.device(device)
        mine = torch.tensor([n_local], dtype=torch.int64, device=self.device)
        every = [torch.zeros_like(mine) for _ in range(self.world_size)]
        with _collective(self, "gathering the row counts"):
            dist.all_gather(every, mine, group=group)
        self.counts = [int(c) for c in every]
        if min(self.counts) < 1:
            raise ValueError(f"flashgp.distributed: every process must hold at least one row, got counts {self.counts}")
        self.starts = [sum(self.counts[:r]) for r in range(self.world_size)]
        self.n = sum(self.counts)
        self.start = self.starts[self.rank]
        self.stop = self.start + n_local

    @property
    def n_local(self) -> int:
        return self.counts[self.rank]

    @property
    def rows(self) -> tuple[int, int, int]:
        return (self.start, self.stop, self.n)

    def __repr__(self) -> str:
        return f"Shards(rank={self.rank}, world_size={self.world_size}, counts={self.counts})"

    # ----- collectives -------------------------------------------------------------
    def row_sum(self, partial: torch.Tensor) -> torch.Tensor:
        """The sum over every process of a partial sum over its rows (an all-reduce of
        ``partial``'s few entries; ``linalg.mbcg``'s ``row_sum``). Not differentiable."""
        out = partial.detach().clone(memory_format=torch.contiguous_format)
        with _collective(self, "summing over rows"):
            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over the processes (a new tensor; not differentiable)."""
        return self.row_sum(tensor)

    def stack(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (the same shape on all), stacked in rank order:
        ``(world_size, *tensor.shape)`` (one all-gather; the sharded pivoted Cholesky's
        candidates). Not differentiable."""
        mine = tensor.detach().contiguous()
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        with _collective(self, "gathering from every process"):
            dist.all_gather(every, mine, group=self.group)
        return torch.stack(every)

    def gather(self, local: torch.Tensor, dim: int = -2) -> torch.Tensor:
        """Every process's rows, along ``dim``, in rank order: ``local`` has this process's
        ``n_local`` rows there, the result all n (one all-gather of the padded blocks: gloo and
        NCCL gather equal sizes). Not differentiable."""
        dim = dim % local.dim()
        if local.shape[dim] != self.n_local:
            raise ValueError(f"gather: expected {self.n_local} rows along dim {dim}, got shape {tuple(local.shape)}")
        moved = local.detach().movedim(dim, 0)
        rest = moved.shape[1:]
        flat = moved.reshape(self.n_local, -1)
        most = max(self.counts)
        if self.n_local < most:
            flat = torch.cat([flat, flat.new_zeros(most - self.n_local, flat.shape[1])])
        flat = flat.contiguous()
        blocks = [torch.empty_like(flat) for _ in range(self.world_size)]
        with _collective(self, "gathering rows"):
            dist.all_gather(blocks, flat, group=self.group)
        full = torch.cat([b[:c] for b, c in zip(blocks, self.counts)])
        return full.reshape(self.n, *rest).movedim(0, dim)

    def local_rows(self, full: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """This process's rows of ``full`` (every process holds the same ``full``, n along
        ``dim``), differentiably: the backward pass gathers every process's gradient rows, so
        the gradient reaching ``full`` (and the parameters it came from) is the same on every
        process and is that of the sum over all rows. A collective in the backward pass."""
        if full.shape[dim] != self.n:
            raise ValueError(f"local_rows: expected {self.n} rows along dim {dim}, got shape {tuple(full.shape)}")
        return _LocalRows.apply(full, self, dim)


class _LocalRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, full, shards: Shards, dim: int):
        ctx.shards, ctx.dim = shards, dim
        return full.narrow(dim, shards.start, shards.n_local).clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.shards.gather(grad.contiguous(), ctx.dim), None, None
