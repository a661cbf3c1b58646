# Markdown report of a benchmarks/uci.py run: settings, then one table row per (data set, library).
"""``markdown(meta, records)``: the OUT.md document that benchmarks/uci.py writes beside OUT.json.

    python benchmarks/uci_report.py results/uci.json     # print that document again from OUT.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def markdown(meta: dict, records: list[dict]) -> str:
    """The results as a markdown document: settings, then one table row per run."""
    s = meta["solver"]
    lines = ["# UCI benchmark: flashgp vs GPyTorch", "", f"- command: `{meta['command']}`",
             f"- device: {meta['device']} ({meta['device_name']}), threads: {meta['threads']}",
             f"- versions: torch {meta['torch']}, gpytorch {meta['gpytorch']}, "
             f"flashgp {meta['flashgp']}, python {meta['python']}",
             f"- data: split {meta['split']}, max_train {meta['max_train']}, {meta['dtype']}, "
             f"seed {meta['seed']}; RMSE and NLL on the standardized target, NLL with noise",
             f"- training: Adam lr {meta['lr']}, {meta['iters']} steps; s/step over the steps "
             f"after the first {meta['warmup_steps']}; predict: test mean and variance, first call "
             "(again: a second call, with the caches)",
             f"- solver: CG tol {s['cg_tol_train']} (train) / {s['cg_tol_eval']} (test), max "
             f"{s['max_cg_iters']} iterations, {s['probes']} probes, pivoted Cholesky rank "
             f"{meta.get('precond_rank') or s['precond_rank']}"
             + (f" (flashgp: up to {meta['flashgp_max_precond_rank']} as training grows it)"
                if meta.get("flashgp_max_precond_rank") else "")
             + "; GPyTorch max_cholesky_size 0, fast_pred_var; flashgp variances: "
             + (f"local, {meta['flashgp_local_neighbors']} nearest training points"
                if meta.get("flashgp_local_neighbors") else f"LOVE, root rank {s['root_rank']}"),
             f"- memory: {meta['memory_kind']}", "",
             "| dataset | library | n_train | n_test | d | s/step (median) | s/step (mean) "
             "| train s | predict s | predict again s | RMSE | NLL | noise | peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if not r.get("ok"):
            error = r.get("error", "?").replace("|", "/")
            lines.append(f"| {r['dataset']} | {r['library']} | failed: {error} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['dataset']} | {r['library']} | {r['n_train']} | {r['n_test']} | {r['d']} "
            f"| {r['step_seconds_median']:.4f} | {r['step_seconds_mean']:.4f} "
            f"| {r['train_seconds']:.2f} | {r['predict_seconds']:.3f} "
            f"| {r.get('predict_again_seconds', float('nan')):.3f} | {r['rmse']:.4f} "
            f"| {r['nll']:.4f} | {r['noise']:.4g} | {r['peak_memory_mb']:.0f} |")
    notes = [f"- {r['library']}/{r['dataset']}: {n}" for r in records
             for n in r.get("notes", []) + r.get("warnings", [])]
    return "\n".join(lines + (["", "Notes and warnings:", ""] + notes if notes else [])) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Print the markdown report of a benchmarks/uci.py "
                                                 "JSON result (the OUT.md it writes beside OUT.json).")
    parser.add_argument("result", type=Path, help="OUT.json of benchmarks/uci.py")
    report = json.loads(parser.parse_args(argv).result.read_text())
    print(markdown(report["meta"], report["results"]), end="")


if __name__ == "__main__":
    main()
