# The operator contract: what every flashgp Operator (flashgp.operators.Operator) must do, checked
# against the matrix it stands for, given densely in float64 by the caller.
"""``check_operator(make_op, dense_reference)`` runs every check below on fresh operators:

- attributes: ``shape`` (a torch.Size of the reference's shape), ``batch_shape``, ``n_rows``,
  ``n_cols``, ``dtype`` and ``device`` (of every result);
- ``matmul`` (and ``@``) for a vector (n_cols,) (broadcast over a batch), batched vectors ``(*batch, n_cols)``, a single
  column ``(*batch, n_cols, 1)`` and a matrix ``(*batch, n_cols, t)``: values, shapes, dtype, device;
- ``to_dense()``; ``diagonal()`` (square operators) ``(*batch, n)``; ``rows(index)`` for an index
  (k,) shared by the batch and, for batch operators, an index ``(*batch, k)`` per batch element;
- ``bilinear_grad(left, right)``: for each of ``grad_inputs()`` the gradient of
  sum_i left_i^T A right_i, against autograd through the dense reference, for one and for
  several columns, called twice on one operator (a first call may consume a cached graph).

Each check raises AssertionError naming the check, what differs, by how much and the tolerance;
an exception raised by the operator becomes an AssertionError naming the check and the exception.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..operators.base import Operator
from ._compare import assert_close, assert_shape, calling, default_rtol, fail, random_tensor

CHECKS = ("attributes", "matmul", "broadcast_vector", "to_dense", "diagonal", "rows", "bilinear_grad")


def check_operator(make_op: Callable[[], Operator], dense_reference: Callable[[Operator], Tensor], *,
                   rtol: float | None = None, atol: float = 0.0, grad_rtol: float | None = None,
                   columns: int = 3, skip: tuple = (), seed: int = 0, name: str | None = None) -> None:
    """Check an operator against the dense matrix it stands for.

    Args:
        make_op: () -> Operator of shape ``(*batch, n_rows, n_cols)``; called once per group of
            checks (each gradient check gets a fresh operator), so it must build a new operator
            on the same tensors each time (the tensors whose gradients are checked are those of
            ``op.grad_inputs()``).
        dense_reference: (op) -> the matrix ``(*batch, n_rows, n_cols)`` computed densely, in float64,
            from the tensors the operator was built on (e.g. ``op.kernel`` evaluated by hand on
            ``op.x1.double()``), differentiable in ``op.grad_inputs()``. Never ``op.to_dense()``.
        rtol: relative tolerance (of the largest reference entry) for products and entries;
            default by the operator's dtype (1e-9 for float64, 1e-4 for float32).
        atol: absolute tolerance added to it.
        grad_rtol: relative tolerance of each gradient (of its largest reference entry);
            default 10 * rtol.
        columns: t, the columns of the matrix right-hand sides and of the gradient checks.
        skip: names from ``CHECKS`` not to run (methods an operator does not implement, e.g.
            ``"rows"`` for one that solvers never ask for rows; ``"broadcast_vector"``: the
            product of a batch operator with one vector (n_cols,) for the whole batch).
        seed: seeds the random right-hand sides and indices.
        name: how messages name the operator (default: its repr).

    Raises:
        AssertionError: the first check that fails.
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"skip: unknown checks {sorted(unknown)}; known: {CHECKS}")
    with calling(f"{name or 'make_op'}: make_op()"):
        op = make_op()
    if not isinstance(op, Operator):
        fail("make_op", f"expected a flashgp Operator, got {type(op).__name__}")
    label = name or repr(op)
    rtol = default_rtol(op.dtype) if rtol is None else rtol
    grad_rtol = 10 * rtol if grad_rtol is None else grad_rtol
    with torch.no_grad(), calling(f"{label}: dense_reference(op)"):
        dense = dense_reference(op).detach().to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    tol = dict(rtol=rtol, atol=atol)
    checks = {
        "attributes": lambda: check_attributes(op, dense.shape, label),
        "matmul": lambda: check_matmul(op, dense, label, columns, gen, **tol,
                                       broadcast="broadcast_vector" not in skip),
        "to_dense": lambda: check_to_dense(op, dense, label, **tol),
        "diagonal": lambda: check_diagonal(op, dense, label, **tol),
        "rows": lambda: check_rows(op, dense, label, gen, **tol),
        "bilinear_grad": lambda: [check_bilinear_grad(make_op(), dense_reference, label, t, gen, rtol=grad_rtol,
                                                      atol=atol) for t in (1, columns)],
    }
    for check, run in checks.items():
        if check not in skip:
            with calling(f"{label}: {check}"):
                run()


def check_attributes(op: Operator, shape: torch.Size, label: str) -> None:
    """shape, batch_shape, n_rows, n_cols, dtype and device of ``op`` against the reference's shape."""
    what = f"{label}: attributes"
    if not isinstance(op.shape, torch.Size):
        fail(what, f"shape is a {type(op.shape).__name__}, expected a torch.Size")
    if tuple(op.shape) != tuple(shape):
        fail(what, f"shape {tuple(op.shape)}, the reference's is {tuple(shape)}")
    if tuple(op.batch_shape) != tuple(shape[:-2]) or (op.n_rows, op.n_cols) != tuple(shape[-2:]):
        fail(what, f"batch_shape {tuple(op.batch_shape)}, n_rows {op.n_rows}, n_cols {op.n_cols} do not "
                   f"match the shape {tuple(shape)}")
    if not isinstance(op.dtype, torch.dtype) or not op.dtype.is_floating_point:
        fail(what, f"dtype {op.dtype!r}, expected a floating torch.dtype")
    if not isinstance(op.device, torch.device):
        fail(what, f"device {op.device!r}, expected a torch.device")


def _check_result(out, shape, op: Operator, what: str) -> None:
    assert_shape(out, shape, what)
    if out.dtype != op.dtype or out.device.type != op.device.type:
        fail(what, f"result has dtype {out.dtype} on {out.device}, the operator's are {op.dtype} on {op.device}")


def check_matmul(op: Operator, dense: Tensor, label: str, columns: int, gen: torch.Generator, *,
                 rtol: float, atol: float, broadcast: bool = True) -> None:
    """op.matmul and op @ for vector, batched vector, single-column and matrix right-hand sides.
    dense: the float64 reference ``(*batch, n_rows, n_cols)``. ``broadcast``: also a vector (n_cols,)
    broadcast over the batch of a batch operator (``Operator.matmul`` reads any 1-D rhs so)."""
    batch, n_rows, n_cols = op.batch_shape, op.n_rows, op.n_cols
    opts = dict(dtype=op.dtype, device=op.device, generator=gen)
    cases = [] if batch and not broadcast else [("a vector (n_cols,)", random_tensor(n_cols, **opts), (*batch, n_rows))]
    if batch:
        cases.append(("batched vectors (*batch, n_cols)", random_tensor(*batch, n_cols, **opts), (*batch, n_rows)))
    cases.append(("one column (*batch, n_cols, 1)", random_tensor(*batch, n_cols, 1, **opts), (*batch, n_rows, 1)))
    cases.append((f"a matrix (*batch, n_cols, {columns})", random_tensor(*batch, n_cols, columns, **opts),
                   (*batch, n_rows, columns)))
    for desc, rhs, shape in cases:
        vector = len(shape) == len(batch) + 1
        rhs64 = rhs.to(torch.float64).cpu()
        expected = (dense @ rhs64.unsqueeze(-1)).squeeze(-1) if vector else dense @ rhs64
        with torch.no_grad():
            out = op.matmul(rhs)
            out_at = op @ rhs
        what = f"{label}: matmul with {desc}"
        _check_result(out, shape, op, what)
        assert_close(out, expected, rtol=rtol, atol=atol, what=what)
        assert_close(out_at, expected, rtol=rtol, atol=atol, what=f"{label}: op @ {desc}")


def check_to_dense(op: Operator, dense: Tensor, label: str, *, rtol: float, atol: float) -> None:
    """op.to_dense() against the reference ``(*batch, n_rows, n_cols)``."""
    with torch.no_grad():
        out = op.to_dense()
    what = f"{label}: to_dense()"
    _check_result(out, dense.shape, op, what)
    assert_close(out, dense, rtol=rtol, atol=atol, what=what)


def check_diagonal(op: Operator, dense: Tensor, label: str, *, rtol: float, atol: float) -> None:
    """op.diagonal() ``(*batch, n)`` against the reference's diagonal (square operators only)."""
    if op.n_rows != op.n_cols:
        return
    with torch.no_grad():
        out = op.diagonal()
    what = f"{label}: diagonal()"
    expected = dense.diagonal(dim1=-2, dim2=-1)
    _check_result(out, expected.shape, op, what)
    assert_close(out, expected, rtol=rtol, atol=atol, what=what)


def check_rows(op: Operator, dense: Tensor, label: str, gen: torch.Generator, *, rtol: float,
               atol: float) -> None:
    """op.rows(index) for a shared index (k,) (unsorted, first and last rows included) and, for
    batch operators, a different index per batch element ``(*batch, k)``."""
    n, batch = op.n_rows, op.batch_shape
    k = min(n, 4)
    perm = torch.randperm(n, generator=gen)
    shared = torch.cat([torch.tensor([n - 1, 0]), perm[(perm != 0) & (perm != n - 1)]])[:k]  # distinct
    cases = [("index (k,)", shared, dense[..., shared, :])]
    if batch:
        per = torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(batch.numel())]).reshape(*batch, k)
        expected = dense.gather(-2, per.unsqueeze(-1).expand(*per.shape, op.n_cols))
        cases.append(("index (*batch, k) (one per batch element)", per, expected))
    for desc, index, expected in cases:
        with torch.no_grad():
            out = op.rows(index.to(op.device))
        what = f"{label}: rows() with {desc} = {index.tolist()}"
        _check_result(out, expected.shape, op, what)
        assert_close(out, expected, rtol=rtol, atol=atol, what=what)


def check_bilinear_grad(op: Operator, dense_reference: Callable[[Operator], Tensor], label: str, t: int,
                        gen: torch.Generator, *, rtol: float, atol: float) -> None:
    """bilinear_grad(left, right) (left ``(*batch, n_rows, t)``, right ``(*batch, n_cols, t)``) against
    autograd of sum(left * (A right)) through ``dense_reference(op)``, for each of
    ``op.grad_inputs()``; the call is repeated on the same operator and must agree again."""
    inputs = tuple(op.grad_inputs())
    what = f"{label}: bilinear_grad with {t} column(s)"
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            fail(what, f"grad_inputs()[{i}] is not a tensor that requires grad")
    batch = op.batch_shape
    opts = dict(dtype=op.dtype, device=op.device, generator=gen)
    left, right = random_tensor(*batch, op.n_rows, t, **opts), random_tensor(*batch, op.n_cols, t, **opts)
    expected = [None] * len(inputs)
    if inputs:
        with torch.enable_grad():
            dense = dense_reference(op).to(torch.float64)
            value = (left.to(dense) * (dense @ right.to(dense))).sum()
            expected = torch.autograd.grad(value, inputs, allow_unused=True)
    # entries of a gradient that should be zero are measured against the largest of all of them
    floor = atol + rtol * 1e-2 * max([float(e.abs().max()) for e in expected if e is not None and e.numel()] + [0.0])
    for attempt in ("first call", "second call on the same operator"):
        grads = tuple(op.bilinear_grad(left, right))
        if not inputs:
            if any(g is not None for g in grads):
                fail(what, f"{attempt}: grad_inputs() is empty but bilinear_grad returned "
                           f"{len(grads)} gradient(s)")
            continue
        if len(grads) != len(inputs):
            fail(what, f"{attempt}: {len(grads)} gradients for {len(inputs)} grad_inputs()")
        for i, (x, g, e) in enumerate(zip(inputs, grads, expected)):
            e = torch.zeros_like(x, dtype=torch.float64) if e is None else e
            where = f"{what}, {attempt}, grad_inputs()[{i}] of shape {tuple(x.shape)}"
            if g is None:
                if bool((e != 0).any()):
                    fail(where, f"None, but the reference gradient's largest entry is {float(e.abs().max()):.3g}")
                continue
            assert_shape(g, x.shape, where)
            assert_close(g, e, rtol=rtol, atol=floor, what=where)
