# The preconditioner contract (flashgp.testing.check_preconditioner) on every preconditioner kind,
# built through its configuration (config.build(kernel_op, noise, state, purpose)) and through the
# plain builder functions; plus the defining property of the block and Vecchia preconditioners.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.linalg import pivoted_cholesky_preconditioner
from flashgp.linalg.vecchia import vecchia_preconditioner
from flashgp.operators import KernelOperator
from flashgp.testing import check_preconditioner

from references import F64, dense_kernel, dense_sparse_factor, generator, inputs, randomized

N = 60
# one line per kind: the configuration (a new kind is one more line here)
CONFIGS = {
    "pivoted_cholesky": lambda: fg.PivotedCholesky(rank=8),
    "pivoted_cholesky_rank0": lambda: fg.PivotedCholesky(rank=0),
    "pivoted_cholesky_blocks": lambda: fg.PivotedCholesky(rank=8, block_size=7),
    "rpcholesky": lambda: fg.RPCholesky(rank=8),
    "rpcholesky_blocks": lambda: fg.RPCholesky(rank=8, block_size=7),
    "nystrom": lambda: fg.Nystrom(rank=8),
    "vecchia": lambda: fg.Vecchia(neighbors=6),
}
# the plain builders (the functions behind the configurations)
BUILDERS = {
    "pivoted_cholesky_preconditioner": lambda op, noise: pivoted_cholesky_preconditioner(op, noise, 8),
    "pivoted_cholesky_preconditioner_blocks": lambda op, noise: pivoted_cholesky_preconditioner(
        op, noise, 8, block_size=7),
    "vecchia_preconditioner": lambda op, noise: vecchia_preconditioner(op, noise, 6),
}
PROBLEMS = {  # (kernel batch, dtype, per-point noise)
    "float64": ((), F64, False),
    "per_point_noise": ((), F64, True),
    "batch": ((2,), F64, False),
    "float32": ((), torch.float32, False),
}


def problem(name):
    """(K operator (*batch, n, n), noise (*batch, n) or (n,), K_hat dense float64)."""
    batch, dtype, per_point = PROBLEMS[name]
    kernel = randomized(Scale(Matern(nu=1.5, ard_dims=2, batch_shape=batch)), seed=3, dtype=dtype)
    x = inputs(N, d=2, seed=4, dtype=dtype)
    noise = torch.full((N,), 0.05, dtype=dtype)
    if per_point:
        noise = (0.02 + 0.2 * torch.rand(N, generator=generator(5), dtype=F64)).to(dtype)
    op = KernelOperator(kernel, x)
    with torch.no_grad():
        k_hat = dense_kernel(kernel, x) + torch.diag_embed(noise.to(F64))
    return op, noise, k_hat


@pytest.mark.parametrize("data", list(PROBLEMS))
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_configured_preconditioner(kind, data):
    op, noise, k_hat = problem(data)
    config = CONFIGS[kind]()
    for purpose in ("train", "predict"):
        precond = config.build(op, noise, config.new_state(), purpose)
        check_preconditioner(precond, k_hat, name=f"{kind} ({data}, {purpose})")


@pytest.mark.parametrize("data", ["float64", "batch"])
@pytest.mark.parametrize("builder", list(BUILDERS))
def test_built_preconditioner(builder, data):
    op, noise, k_hat = problem(data)
    check_preconditioner(BUILDERS[builder](op, noise), k_hat, name=f"{builder} ({data})")


def test_block_preconditioner_keeps_the_diagonal_blocks_of_k_hat():
    """P = L L^T + blockdiag(K_hat - L L^T): on its diagonal blocks P equals K_hat."""
    op, noise, k_hat = problem("float64")
    precond = pivoted_cholesky_preconditioner(op, noise, 8, block_size=7)
    p = precond.to_dense()
    for block in precond.index:
        block = block[block < N]
        torch.testing.assert_close(p[block][:, block], k_hat[block][:, block], rtol=1e-9, atol=1e-12)


def test_vecchia_conditionals_are_exact():
    """U K_hat U^T has a unit diagonal (each point's conditional on its predecessors is exact);
    U (from mul) matches the factor rebuilt entry by entry from its index and weights."""
    op, noise, k_hat = problem("float64")
    precond = vecchia_preconditioner(op, noise, 6)
    u = dense_sparse_factor(precond)
    torch.testing.assert_close(precond.mul(torch.eye(N, dtype=F64)), u, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((u @ k_hat @ u.mT).diagonal(), torch.ones(N, dtype=F64), rtol=1e-9, atol=1e-9)
    # and with the independent P: the split form against (U^T U)^-1 built entry by entry
    check_preconditioner(precond, k_hat, p_dense=torch.linalg.inv(u.mT @ u), name="vecchia (entrywise U)",
                         skip=("sample",))
