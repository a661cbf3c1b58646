# Training steps of a minibatch model replayed from one CUDA graph: forward, backward and the
# Adam update recorded once and launched as a whole, instead of some 400 kernels one by one.
"""CUDA-graph steps for minibatch training (experimental: ``fg.fit(..., cuda_graph=True)``).

An SVGP step at batch 1,024 launches a few hundred small kernels (forward, backward, Adam), and
on a GPU the host's launching them takes longer than the GPU's work (profile in
``benchmarks/results/svgp/svgp_uci_h100.md``). ``GraphSteps`` records the step once and replays
it per batch.
A recorded step cannot read anything back, so it runs the model's ``unchecked_loss`` (the same
objective, checks moved out: ``fg.fit`` validates the whole data once; K_zz always jittered) and
reports whether K_zz factored as a tensor. A step whose factorization failed or whose loss is not
finite is undone (parameters and Adam state copied back from inside the graph's own backup) and
taken eagerly instead, where the usual checks, jitter and errors apply; so are batches of
another shape (the last, smaller batch of an epoch).

The recording comes first, before any eager backward pass (autograd keeps the stream of a
parameter's gradient accumulator while an earlier graph holds it, and a recording cannot depend
on the default stream): Adam's state is created by a step with zero gradients, which moves no
parameter, and its step count is set back to 0. Warm-up passes and the recording share one side
stream.

Off by default in ``fg.fit`` until the recording is validated on more configurations; timings in
``benchmarks/results/svgp/cuda_graph_h100.md`` (``python benchmarks/svgp_graph_step.py``).
"""
from __future__ import annotations

import math
import warnings

import torch

from .errors import NumericalWarning

WARMUP = 2  # forward-backward passes on a side stream before recording (no update)


class GraphSteps:
    """Adam steps of ``model`` (``unchecked_loss(x, y)`` -> (loss, info)) replayed from a CUDA graph.

    ``optimizer``: a ``torch.optim.Adam`` built with ``capturable=True`` over the model's trained
    parameters. ``step(x, y)`` returns the loss of the step it took, or None when it took none
    (the caller then steps eagerly). Use ``eligible`` first.
    """

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.graph = None
        self.disabled = False

    @staticmethod
    def eligible(model, optimizer, batches) -> bool:
        """CUDA, a model with ``unchecked_loss`` that allows it (``graph_capturable``), a capturable
        Adam and tensor data (a DataLoader's batches are not checked in advance)."""
        return (model.device.type == "cuda" and getattr(model, "graph_capturable", False)
                and type(optimizer) is torch.optim.Adam and bool(optimizer.defaults.get("capturable"))
                and batches is not None and batches.loader is None)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        if self.disabled:
            return None
        device, dtype = self.model.device, self.model.dtype
        x = x.to(device=device, dtype=dtype, non_blocking=True)
        y = y.to(device=device, dtype=dtype, non_blocking=True)
        if self.graph is None:
            try:
                self._record(x, y)
            except RuntimeError as err:  # an operation that cannot be recorded: train eagerly
                self.disabled = True
                self.graph = None
                self.optimizer.zero_grad(set_to_none=True)
                warnings.warn(f"CUDA graph steps are off for this fit ({str(err).splitlines()[0][:200]}); "
                              "steps run one kernel at a time", NumericalWarning, stacklevel=3)
                return None
        if x.shape != self.x.shape or y.shape != self.y.shape:
            return None
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        loss, failed = torch.stack([self.loss.detach(), self.info.sum().to(self.loss.dtype)]).tolist()
        if failed or not math.isfinite(loss):
            torch._foreach_copy_(self.tracked, self.backup)  # undo: the eager step decides
            return None
        self.model.diagnostics = {**self.diagnostics, "graph": True}
        return self.loss.detach().clone()

    def _record(self, x: torch.Tensor, y: torch.Tensor) -> None:
        opt, model = self.optimizer, self.model
        self.x, self.y = x.clone(), y.clone()
        params = [p for group in opt.param_groups for p in group["params"]]
        if not opt.state:  # Adam's state, without an update: zero moments give a zero step
            for p in params:
                p.grad = torch.zeros_like(p)
            opt.step()
            for p in params:
                opt.state[p]["step"].zero_()
        self.tracked = params + [t for p in params for t in opt.state.get(p, {}).values()
                                 if isinstance(t, torch.Tensor) and t.device.type == "cuda"]
        self.backup = [t.detach().clone() for t in self.tracked]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                opt.zero_grad(set_to_none=True)
                loss, _ = model.unchecked_loss(self.x, self.y)
                loss.backward()
            del loss  # its autograd graph holds the gradient accumulators
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            torch._foreach_copy_(self.backup, self.tracked)
            self.loss, self.info = model.unchecked_loss(self.x, self.y)
            self.loss.backward()
            opt.step()
        self.graph = graph
        self.diagnostics = {"path": "svgp", "inducing": model.inducing_points.shape[-2], "batch": x.shape[0],
                            "jitter": None}
