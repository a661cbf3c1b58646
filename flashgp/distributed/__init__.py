"""Exact GPs with the training rows split across processes (``torch.distributed``; issue 35).

``ShardedExactGP`` (``model.py``) is an ``fg.ExactGP`` whose training data are this process's
rows: ``fg.fit`` trains it on every process alike (its mll is ``sharded_mll`` with the solver's
settings, pivots kept between steps in a ``ShardedPivotCache``, initial values from the gathered
data), it predicts on every process (``ShardedPrediction``: sharded CG means, exact variances
for small test sets, LOVE above; ``local_posterior`` for each process's own test points), and
its files and checkpoints are those of an ``ExactGP`` on all rows (``load`` splits one over a
group; checkpoints resume on any number of processes). Below it, the BBMM log marginal
likelihood and its gradients computed by G processes that each hold a contiguous block of the
rows (``sharded_mll``), equal to round-off to what one process computes on all rows with the
same preconditioner and probes. ``examples/distributed_fit.py`` is the ``torchrun`` entry point;
docs/guide/distributed.md the guide. The pieces:

- ``Shards`` (``group.py``): rank, world size and each process's row range (the per-process row
  counts are gathered once); ``row_sum`` (a partial sum over this process's rows -> the sum over
  all rows: one all-reduce), ``gather`` (every process's rows: one all-gather of the padded
  blocks) and ``local_rows`` (this process's rows of a tensor every process holds, whose
  backward gathers the gradient rows).
- ``ShardedKernelOperator`` (``operator.py``): this process's rows K(x_local, x_all) of K, a
  map from its rows of a vector block to its rows of the product through the ordinary
  ``KernelOperator`` (so every local backend serves it), with gradients all-reduced;
  ``rows(index)`` gives rows of K at global indices, this process's columns of them.
- ``sharded_pivoted_cholesky`` and ``ShardedLowRankPlusDiag`` (``precond.py``): the greedy
  pivoted Cholesky with pivots chosen over all n rows (per step one all-gather of each
  process's best candidate, its value, global index and factor row; the lowest global index wins
  ties, as ``torch.argmax`` on one process), each process holding its rows of the factor; and
  P = L L^T + diag(noise) on sharded rows: Woodbury solves whose sums over rows (the k x k
  capacitance matrix once, L^T S^-1 r per solve) are all-reduced, the exact log det, and N(0, P)
  samples that are this process's rows of the draws one process makes from the same generator.
  The pivots are those of one process and the rest agrees to round-off (5e-14 relative in the
  tests). Built without gradient, as on one process (its log det is a constant of the estimate).
  ``sharded_preconditioner(config, op, noise_local)`` builds it for ``fg.PivotedCholesky``
  without blocks; other configurations raise NotImplementedError naming what is supported.
- ``linalg.mbcg`` and ``linalg.inv_quad_logdet`` take ``row_sum`` (and the latter ``rows``):
  the CG vectors stay sharded, and every sum over rows (inner products, norms, the
  re-orthogonalization coefficients, the inverse quadratic form) is a local sum plus an
  all-reduce of a few floats, so the scalar recurrences are identical on every process. A
  preconditioner there must be sharded on the same rows (``Preconditioner.sharded_rows``).

Only ``torch.distributed`` collectives move data (all_gather, all_reduce); no transport of our
own. Gradients: the kernel's through the operator's all-reduced bilinear gradient; the
mean's and the noise's through ``Shards.local_rows`` (each process evaluates the mean and the
noise on all n rows, which is O(n), and takes its rows; the backward pass gathers the rows of
their gradient), so after ``.backward()`` every process holds the global gradient without an
all-reduce of ``param.grad``.

How close to one process: every process returns bitwise the same value and gradients (the
collectives hand all of them the same sums), and these equal the single-process run's to
round-off, 1e-14 relative in the tests (float64, 2 and 3 processes), when CG re-orthogonalizes
(``reorthogonalize=True``). Plain CG does not allow that: once it has lost orthogonality (a few
iterations after the largest eigenvalues converge) its iterates amplify round-off exponentially,
so the different order of the sums over rows moves the result by about the CG error itself. On
one process, a 1e-15 relative change of the products moved the solution's largest entry by 1e-10
after 10 iterations and by 1e-2 after 20 (n = 60, Matern 5/2, noise 0.05); with ``fg.CG()``'s
settings the sharded mll differed from the single-process one by 4e-4 to 9e-4 relative and its
gradients by up to 8e-3, the same 20 iterations, well inside the 10-probe estimate's own error.
Any change of summation order does this (another BLAS, another thread count); it is not a
defect of sharding.

Changes from the design in the brief, and why:

- ``AddedDiag(ShardedKernelOperator, noise_local)`` works as it is for products, but the
  gradient it gives the noise diagonal is per row: summed into the noise parameter on one
  process it would be that process's part only. Taking ``noise_local`` as
  ``Shards.local_rows(noise over all n rows)`` makes the backward pass gather the rows, which
  fixes it without a sharded AddedDiag; the mean gets the same treatment.
- The operator's shape is ``(n_local, n_local)`` (its local rows in, its local rows out), so
  that AddedDiag and the solvers' size checks see the local rows; ``to_dense`` raises
  (``local_rows()`` gives K(x_local, x_all)) and ``rows`` takes global row indices.
- The preconditioner takes the configuration ``fg.CG(precond=...)`` takes
  (``sharded_mll(precond=fg.PivotedCholesky(rank=k))``) rather than a ``precond_rank``, so that
  later sharded kinds need no new argument. Pivots kept between calls live in a
  ``ShardedPivotCache``: one process's ``PivotCache`` whose three build steps (fresh pivots,
  a rebuild from cached ones, the preconditioner) are the sharded ones, keyed by the global n,
  so the same decisions and the same checkpoint state as on one process. The winner's
  factor row travels in the candidates' all-gather (k + 2 floats per process) instead of a
  second collective from its owner.
- ``inv_quad_logdet`` takes ``rows=(start, stop, n)`` beside ``row_sum``: the probes are drawn
  for all n rows and sliced, and the SLQ settling warning uses the global n.

- ``ShardedExactGP`` (milestone 3): a subclass of ``ExactGP`` rather than a wrapper, so its
  parts, constructor checks, ``fg.fit``, ``predict`` and ``diagnostics`` are ExactGP's; it
  overrides ``num_train`` (the global n, which the per-point loss and fit's MAP objective
  divide by), ``_take_data`` (gathers x and y once), ``_init_values`` (``init_from_data`` on
  the gathered data through its ``data`` argument, so every process chooses the values one
  process chooses on all rows), ``mll`` and ``posterior``. The solver must be ``fg.CG`` with no
  preconditioner or ``fg.PivotedCholesky`` without blocks. Files go through the one-process
  defaults of three ``GPModel`` hooks (``file_model``, ``writes_checkpoints``,
  ``check_resume``) rather than a distributed case in ``io`` and ``checkpoint``. In the tests
  (2 gloo processes, 33/27 rows) the initial values are bitwise those of one process, 5 Adam
  steps of ``fg.fit`` give the same losses and hyperparameters to 5e-15 relative, the posterior
  means agree to 5e-11 (eval_tol 1e-10) and the variances with the dense Cholesky ones to 4e-15.

Not built yet: other sharded preconditioners (Vecchia, blocks, RPCholesky), certified and
local variances, replacing the data, batch models, gradients with respect to the inputs, a
gradient pass that visits each pair once over all processes, and measurements on several GPUs.
See docs/guide/distributed.md.
"""
from .files import even_rows, load
from .group import ShardError, Shards
from .mll import sharded_mll
from .model import ShardedExactGP
from .operator import ShardedKernelOperator
from .pivots import ShardedPivotCache, sharded_nystrom_factor
from .precond import ShardedLowRankPlusDiag, sharded_pivoted_cholesky, sharded_preconditioner

__all__ = ["even_rows", "load", "Shards", "ShardError", "ShardedExactGP", "ShardedKernelOperator",
           "ShardedLowRankPlusDiag", "ShardedPivotCache", "sharded_nystrom_factor", "sharded_mll",
           "sharded_pivoted_cholesky", "sharded_preconditioner"]
