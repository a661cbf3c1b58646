# Minibatches for fg.fit: from tensors (shuffled per epoch, reproducibly from the seed and the
# step alone, so a resumed fit draws the same batches mid-epoch) or from a torch DataLoader.
from __future__ import annotations

import numbers

import torch
from torch.utils.data import DataLoader

DEFAULT_BATCH_SIZE = 1024


class Minibatches:
    """The batch of every training step.

    ``data``: a pair (x ``(n, d)``, y ``(n, ...)``) of tensors or arrays (kept where they are, e.g.
    in CPU memory; each batch is gathered there and moved to the model's device by the model), or
    a ``torch.utils.data.DataLoader`` yielding (x, y) pairs. ``batch_size``: points per batch for
    tensors (default 1,024; at most n); a DataLoader has its own.

    ``batch(step)`` gives the batch of optimizer step ``step``: epoch ``step // batches_per_epoch``,
    position ``step % batches_per_epoch``. For tensors the order of each epoch is a permutation
    drawn from ``seed`` and the epoch number only, so a fit resumed at any step gets the same
    batches as an uninterrupted one. A DataLoader is read in order; a resumed fit skips the
    batches of the current epoch already used (the same ones when its sampler is seeded).
    ``num_data``: n, the number of training points.
    """

    def __init__(self, data, batch_size: int | None = None, seed: int | None = None):
        self.seed = 0 if seed is None else int(seed)
        self._epoch, self._order, self._iterator = None, None, None
        if isinstance(data, DataLoader):
            if batch_size is not None:
                raise ValueError("batch_size: a DataLoader has its own batch size; leave batch_size=None")
            try:
                self.num_data, self.batches_per_epoch = len(data.dataset), len(data)
            except TypeError:
                raise ValueError("data: the DataLoader's dataset must have a length (an iterable dataset "
                                 "cannot say how many points the ELBO is scaled to)") from None
            self.loader, self.batch_size = data, data.batch_size
            return
        self.loader = None
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise TypeError(f"data: expected (x, y) or a torch DataLoader, got {type(data).__name__}")
        x, y = (v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for v in data)
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"data: expected x and y with the same positive number of rows, got shapes "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        self.x, self.y, self.num_data = x, y, x.shape[0]
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.batch_size = min(int(size), self.num_data)
        self.batches_per_epoch = -(-self.num_data // self.batch_size)

    def batch(self, step: int):
        """(x, y) of optimizer step ``step`` (where the data live)."""
        epoch, position = divmod(step, self.batches_per_epoch)
        if self.loader is not None:
            return self._loader_batch(epoch, position)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.num_data, generator=generator).to(self.x.device)
            self._epoch = epoch
        index = self._order[position * self.batch_size:(position + 1) * self.batch_size]
        return self.x[index], self.y[index]

    def _loader_batch(self, epoch: int, position: int):
        if epoch != self._epoch or self._iterator is None or position != self._position:
            self._iterator, self._epoch = iter(self.loader), epoch
            for _ in range(position):  # a resumed fit: the batches of this epoch already used
                next(self._iterator)
        self._position = position + 1
        item = next(self._iterator)
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"data: the DataLoader must yield (x, y) pairs, got {type(item).__name__}")
        return item[0], item[1]

    def settings(self) -> dict:
        """What a resumed fit must repeat: the batch size and n."""
        return {"batch_size": self.batch_size, "num_data": self.num_data}
