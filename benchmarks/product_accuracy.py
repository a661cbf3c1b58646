# Accuracy of the fused K @ V and gradient row sums in each precision mode against float64 dense
# references on the same float32 inputs. Usage: python benchmarks/product_accuracy.py [--n 20000]
"""How close each fused precision mode comes to exact arithmetic.

For each profile, d and precision: z (n, d) ~ N(0, 1) * scale (so that kernel entries span
[0, 1]), v, u (n, t) ~ N(0, 1), all float32. The reference forms K in float64 from the float32
inputs (row blocks, on the same device) and computes K @ v and the gradient row sums (the ``hz``
output of ``row_grad``, sum_b H_ab z_b with H = (u v^T) * dk/dr2) in float64. Reported per
output: ||x - ref||_F / ||ref||_F and max|x - ref| / max|ref|. The blocked torch product in
float32 (cdist, exp, matmul per row block) is the "torch fp32" row, the accuracy a user gets
without the fused kernels. Writes --out as JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from flashgp.backends import triton_kernels as tk  # noqa: E402

F64 = torch.float64


def reference_terms(profile: str, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, dk/dr2) of a unit-scale profile in float64 (dk/dr2 := 0 at r2 = 0 for matern12)."""
    if profile == "rbf":
        k = torch.exp(-0.5 * r2)
        return k, -0.5 * k
    c = {"matern12": 1.0, "matern32": 3.0, "matern52": 5.0}[profile]
    s = (c * r2).sqrt()
    e = torch.exp(-s)
    if profile == "matern12":
        return e, torch.where(r2 > 0, -0.5 * e / s.clamp_min(1e-300), 0.0)
    if profile == "matern32":
        return (1 + s) * e, -1.5 * e
    return (1 + s + s * s / 3) * e, -5.0 / 6.0 * (1 + s) * e


def references(profile, z, u, v, block=2048):
    """(K @ v, K @ v from float32 torch ops, hz) with K formed in row blocks of ``block``."""
    z64, u64, v64 = z.double(), u.double(), v.double()
    kv, kv32, hz = (torch.zeros(z.shape[0], c, device=z.device, dtype=d)
                    for c, d in ((v.shape[1], F64), (v.shape[1], torch.float32), (z.shape[1], F64)))
    for s in range(0, z.shape[0], block):
        r2 = torch.cdist(z64[s:s + block], z64).pow(2)
        k, dk = reference_terms(profile, r2)
        kv[s:s + block] = k @ v64
        hz[s:s + block] = ((u64[s:s + block] @ v64.T) * dk) @ z64
        r2_32 = torch.cdist(z[s:s + block], z).pow(2)
        kv32[s:s + block] = reference_terms(profile, r2_32)[0] @ v
    return kv, kv32, hz


def errors(value: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = value.double() - ref
    return dict(fro=float(diff.norm() / ref.norm()), max=float(diff.abs().max() / ref.abs().max()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, nargs="+", default=[3, 8, 20])
    parser.add_argument("--t", type=int, default=11)
    parser.add_argument("--profiles", nargs="+", default=["rbf", "matern52"],
                        choices=["rbf", "matern12", "matern32", "matern52"],
                        help="unit-scale profiles with a float64 reference here (rq: the tests)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32x3", "fp16x3", "tf32"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="product_accuracy.json")
    args = parser.parse_args(argv)
    rows = []
    for profile in args.profiles:
        for d in args.d:
            gen = torch.Generator(device=args.device).manual_seed(d)
            # lengthscale-scaled inputs with r2 spread over [0, ~10]: K from ~1e-2 to 1
            z = torch.randn(args.n, d, device=args.device, generator=gen) * (1.2 / d ** 0.5)
            v = torch.randn(args.n, args.t, device=args.device, generator=gen)
            u = torch.randn(args.n, args.t, device=args.device, generator=gen)
            kv, kv32, hz = references(profile, z, u, v)
            rows.append(dict(profile=profile, d=d, precision="torch fp32", op="matmul",
                             **errors(kv32, kv)))
            for precision in args.precisions:
                out = tk.kv_matmul(z[None], z[None], v[None], profile, precision=precision)[0]
                rows.append(dict(profile=profile, d=d, precision=precision, op="matmul",
                                 **errors(out, kv)))
                grad_hz = tk.row_grad(z[None], z[None], u[None], v[None], profile,
                                      precision=precision, need_wk=False)[1][0]
                rows.append(dict(profile=profile, d=d, precision=precision, op="grad hz",
                                 **errors(grad_hz, hz)))
            for row in rows[-(1 + 2 * len(args.precisions)):]:
                print(f"{row['profile']:9s} d={row['d']:3d} {row['op']:8s} {row['precision']:10s} "
                      f"fro {row['fro']:.2e}  max {row['max']:.2e}", flush=True)
    meta = dict(device=torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                torch=torch.__version__, triton=__import__("triton").__version__,
                command=" ".join(sys.argv), n=args.n, t=args.t, rows=rows)
    Path(args.out).write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
