# Contract checks for flashgp extensions: plain functions that raise AssertionError (with what
# differs, by how much and the tolerance) when an operator, preconditioner or model breaks the
# contract the rest of flashgp relies on. Usable from pytest or any script.
"""Contract checks for extensions of flashgp.

- ``check_operator(make_op, dense_reference)``: an ``flashgp.operators.Operator`` against the
  dense float64 matrix it stands for (products, entries, gradients).
- ``check_preconditioner(precond, k_hat_dense)``: solves, log determinant, samples, split form
  and spectrum floor of a CG preconditioner against its dense float64 matrix.
- ``check_model(make_model, ...)``: a ``flashgp.models.GPModel``'s loss, posterior, prior,
  config, files, checkpointed fits and solver state against dense float64 references.
"""
from .operators import check_operator

__all__ = ["check_operator"]
