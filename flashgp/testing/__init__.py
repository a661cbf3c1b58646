# Contract checks for flashgp extensions: plain functions that raise AssertionError (with what
# differs, by how much and the tolerance) when an operator, preconditioner or model breaks the
# contract the rest of flashgp relies on. Usable from pytest or any script.
"""Contract checks for extensions of flashgp.

- ``check_operator(make_op, dense_reference)``: an ``flashgp.operators.Operator`` against the
  dense float64 matrix it stands for (products, entries, gradients).
- ``check_preconditioner(precond, k_hat_dense)``: solves, log determinant, samples, split form
  and spectrum floor of a CG preconditioner against its dense float64 matrix.
- ``check_model(make_model, ...)``: a ``flashgp.models.GPModel``'s loss, posterior, prior,
  config, files, checkpointed fits and solver state against dense float64 references
  (``exact_gp_loss_reference`` and ``exact_gp_posterior_reference`` for an ExactGP,
  ``sgpr_loss_reference`` and ``sgpr_posterior_reference`` for an SGPR); its parts
  are also public (``check_loss``, ``check_posterior``, ``check_prior``, ``check_config``,
  ``check_save_load``, ``check_resume``, ``check_solver_state``).

A new operator, checked without pytest (``dense`` is the float64 matrix, built by hand from the
same tensors, differentiable in them)::

    from flashgp.testing import check_operator
    check_operator(lambda: MyOperator(a, b), lambda op: dense_formula(op.a, op.b))

Each raises AssertionError at the first check that fails, naming the check, the values that
differ, by how much and the tolerance. The suite's own use: ``tests/contracts/``.
"""
from .models import (check_config, check_loss, check_model, check_posterior, check_prior, check_resume,
                     check_save_load, check_solver_state, exact_gp_loss_reference, exact_gp_posterior_reference)
from .operators import check_operator
from .preconditioners import check_preconditioner
from .sgpr_references import sgpr_loss_reference, sgpr_posterior_reference

__all__ = ["check_operator", "check_preconditioner", "check_model", "check_loss", "check_posterior",
           "check_prior", "check_config", "check_save_load", "check_resume", "check_solver_state",
           "exact_gp_loss_reference", "exact_gp_posterior_reference", "sgpr_loss_reference",
           "sgpr_posterior_reference"]
