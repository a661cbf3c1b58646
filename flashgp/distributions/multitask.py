# The posterior of a multitask model at m test points for all t tasks: the joint Gaussian over the
# m t values (task-major), read as (m, t) tables, cross-task covariances and correlated samples.
from __future__ import annotations

import torch

from .posterior import Posterior

# test points per chunk when the cross-task covariances are gathered from covariance rows
TASK_COVARIANCE_ENTRIES = 1 << 24


class MultitaskPosterior:
    """All t tasks at m test points. ``flat``: the ``Posterior`` over the m t values, task-major
    (entry a m + i: task a at point i), whose covariance operator holds every cross covariance.

    ``mean``, ``variance``, ``stddev`` ``(m, t)``; ``confidence_region`` two ``(m, t)``;
    ``sample(s)`` ``(s, m, t)`` (joint over points and tasks); ``task_covariance()`` ``(m, t, t)``;
    ``covariance``: the flat operator. ``noise`` (predictive) is the flat posterior's."""

    def __init__(self, flat: Posterior, num_tasks: int):
        self.flat, self.num_tasks = flat, num_tasks
        self.num_points = flat.mean.shape[-1] // num_tasks

    def _table(self, values: torch.Tensor) -> torch.Tensor:
        """``(..., t m)`` task-major -> ``(..., m, t)``."""
        return values.reshape(*values.shape[:-1], self.num_tasks, self.num_points).transpose(-1, -2)

    @property
    def mean(self) -> torch.Tensor:
        return self._table(self.flat.mean)

    @property
    def variance(self) -> torch.Tensor:
        return self._table(self.flat.variance)

    @property
    def latent_variance(self) -> torch.Tensor:
        return self._table(self.flat.latent_variance)

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    @property
    def covariance(self):
        return self.flat.covariance

    @property
    def noise(self):
        return self.flat.noise

    @property
    def diagnostics(self) -> dict:
        return self.flat.diagnostics

    def confidence_region(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self.flat.confidence_region(level)
        return self._table(lower), self._table(upper)

    def sample(self, num_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """Joint samples ``(num_samples, m, t)`` (correlated across points and tasks)."""
        return self._table(self.flat.sample(num_samples, generator))

    def task_covariance(self) -> torch.Tensor:
        """The covariance between the tasks at each test point ``(m, t, t)`` (with the noise on the
        diagonal for a predictive posterior), from the covariance operator's rows in chunks."""
        t, m = self.num_tasks, self.num_points
        chunk = max(1, TASK_COVARIANCE_ENTRIES // max(1, t * t * m))
        tasks = torch.arange(t, device=self.flat.mean.device)
        out = []
        for begin in range(0, m, chunk):
            points = torch.arange(begin, min(m, begin + chunk), device=tasks.device)
            index = (tasks.unsqueeze(0) * m + points.unsqueeze(-1))  # (c, t): row of (point, task)
            rows = self.flat.covariance.rows(index.reshape(-1))  # (c t, t m)
            block = rows.reshape(len(points), t, t, m)  # [i, a, b, j]
            out.append(block.gather(-1, points.view(-1, 1, 1, 1).expand(-1, t, t, 1)).squeeze(-1))
        cov = torch.cat(out)
        if self.flat.noise is not None:
            cov = cov + torch.diag_embed(self._table(self.flat.noise))
        return cov

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Sum of the marginal Gaussian log densities of y ``(m, t)``."""
        y = torch.as_tensor(y, dtype=self.flat.mean.dtype, device=self.flat.mean.device)
        if y.shape != (self.num_points, self.num_tasks):
            raise ValueError(f"y: expected shape ({self.num_points}, {self.num_tasks}), got {tuple(y.shape)}")
        return self.flat.log_prob(y.T.reshape(-1))
