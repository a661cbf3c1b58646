# Correctness and speed of the Gluon (async wgmma) K @ V against the Triton kernel, on one GPU.
# Checks every profile against float64 at small sizes, then times launch settings at n = 100k / 1M.
"""Gluon K @ V (``flashgp.backends.gluon_kv``) against ``triton_kernels.kv_matmul``.

Example (H200): python benchmarks/gluon_kv_speed.py --n 100000 1000000 --out $OUT/gluon_kv.json

1. Accuracy: ||K V - ref|| / ||ref|| against a float64 product, for every profile, d = 1, 3, 8,
   t = 2, 11, 16, 33, 70, batches of 2, both precisions, on fresh random inputs (the output is
   poisoned with NaN first, so unwritten entries fail).
2. Speed: median of ``triton.testing.do_bench`` for the Triton kernel and each Gluon launch
   setting (``--configs``), same inputs, same process; entries per second = n^2 / time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flashgp.kernels import RBF, RQ, Matern  # noqa: E402

PROFILES = ("rbf", "matern12", "matern32", "matern52", "rq")


def reference(z1, z2, v, profile, alpha):
    """float64 K(z1, z2) @ v with the library's own unit-lengthscale kernel modules."""
    kernel = {"rbf": RBF(), "matern12": Matern(nu=0.5), "matern32": Matern(nu=1.5),
              "matern52": Matern(nu=2.5), "rq": RQ(batch_shape=(z1.shape[0],))}[profile]
    if profile == "rq":
        kernel.alpha = alpha.detach().cpu().double()
    kernel = kernel.to(device=z1.device, dtype=torch.float64)
    with torch.no_grad():
        return kernel(z1.double(), z2.double()) @ v.double()


def accuracy(gk, device, seed=0) -> list:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for profile in PROFILES:
        for d in (1, 3, 8):
            for t in (2, 11, 16, 33, 70):
                for precision in ("tf32x3", "tf32"):
                    z1 = (torch.rand(2, 300, d, generator=gen) * 3).to(device)
                    z2 = (torch.rand(2, 1000, d, generator=gen) * 3).to(device)
                    v = torch.randn(2, 1000, t, generator=gen).to(device)
                    alpha = (torch.rand(2, generator=gen) + 0.5).to(device) if profile == "rq" else None
                    out = gk.gluon_kv_matmul(z1, z2, v, profile, alpha, precision)
                    ref = reference(z1, z2, v, profile, alpha)
                    err = ((out.double() - ref).norm() / ref.norm()).item()
                    rows.append({"profile": profile, "d": d, "t": t, "precision": precision,
                                 "rel_err": err, "finite": bool(torch.isfinite(out).all())})
    return rows


def timing(gk, tk, n, d, t, profile, configs, device, seed=1) -> list:
    import triton
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = (torch.rand(1, n, d, generator=gen) * (n / 1000) ** (1 / d)).to(device)
    v = torch.randn(1, n, t, generator=gen).to(device)
    alpha = torch.ones(1, device=device) if profile == "rq" else None
    rows_ref = min(n, 2048 if n <= 200000 else 256)
    ref = reference(z[:, :rows_ref], z, v, profile, alpha)

    def err(out):
        o = out[:, :rows_ref].double()
        return ((o - ref).norm() / ref.norm()).item()

    results = []
    fn = lambda: tk.kv_matmul(z, z, v, profile, alpha, "tf32x3")  # noqa: E731
    ms = triton.testing.do_bench(fn, warmup=100, rep=500, return_mode="median")
    results.append({"kernel": "triton", "config": None, "ms": ms, "rel_err": err(fn())})
    for bm, bn, nw, keep in configs:
        fn = lambda: gk.gluon_kv_matmul(z, z, v, profile, alpha, "tf32x3", bm, bn, nw, keep)  # noqa: E731
        try:
            ms = triton.testing.do_bench(fn, warmup=100, rep=500, return_mode="median")
            results.append({"kernel": "gluon", "config": [bm, bn, nw, keep], "ms": ms,
                            "rel_err": err(fn())})
        except Exception as exc:  # a setting that does not compile is reported, not fatal
            results.append({"kernel": "gluon", "config": [bm, bn, nw, keep], "error": repr(exc)[:300]})
    for r in results:
        r.update({"n": n, "d": d, "t": t, "profile": profile})
        if "ms" in r:
            r["entries_per_s"] = n * n / (r["ms"] * 1e-3)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100000])
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--t", type=int, default=11)
    p.add_argument("--profiles", nargs="+", default=["rbf", "matern52"])
    p.add_argument("--configs", nargs="+", default=["128,32,4,1", "128,32,4,0", "64,32,4,1", "256,16,4,1",
                                                    "128,16,4,1", "64,64,4,1", "64,16,4,1"],
                   help="BLOCK_M,BLOCK_N,num_warps,keep_live")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", default="gluon_kv.json")
    args = p.parse_args(argv)
    from flashgp.backends import gluon_kv as gk
    from flashgp.backends import triton_kernels as tk
    device = torch.device("cuda")
    configs = [tuple(int(x) for x in c.split(",")) for c in args.configs]
    configs = [(bm, bn, nw, bool(keep)) for bm, bn, nw, keep in configs]
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if not args.skip_accuracy:
        acc = accuracy(gk, device)
        report["accuracy"] = acc
        worst = {}
        for r in acc:
            key = (r["profile"], r["precision"])
            worst[key] = max(worst.get(key, 0.0), r["rel_err"] if r["finite"] else float("inf"))
        for (profile, precision), e in sorted(worst.items()):
            print(f"accuracy {profile:9s} {precision:7s} max rel err {e:.2e}", flush=True)
    report["timing"] = []
    for n in args.n:
        for profile in args.profiles:
            for r in timing(gk, tk, n, args.d, args.t, profile, configs, device):
                report["timing"].append(r)
                label = "triton" if r["kernel"] == "triton" else "gluon " + ",".join(map(str, r["config"]))
                print(f"n={n} {profile:9s} {label:18s} " + (
                    f"{r['ms']:9.3f} ms {r['entries_per_s']:.3e}/s err {r['rel_err']:.1e}"
                    if "ms" in r else r["error"]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
