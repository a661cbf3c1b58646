#!/usr/bin/env bash
# Session 19, GPU call 2: the n = 1M training step with fg.Vecchia(30) (the session-8 fit's final
# hyperparameters, 3 Adam steps, fused Triton kernels) with the code before this session (.before)
# and after it (AFTER, default the working tree), in the same call. Run from the repository root with .before carried.
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
H=$PWD/benchmarks/results/session8/million_fit_history_h200.json
for version in before after; do
    root=${AFTER:-.}; [ "$version" = before ] && root=${BEFORE:-.before}
    (cd "$root" && PYTHONPATH=. timeout -s INT 240 python examples/large_gpu_fit.py --n 1000000 --raw-parameters "$H" \
        --backend triton --iters 3 --test 1000 --root-rank 50 --eval-tol 0.01 --vecchia 30 --lanczos-iters 10) \
        > "$OUT/million_$version.log" 2>&1
    grep -E "step [0-9]|seconds per step|training:" "$OUT/million_$version.log"
done
