#!/usr/bin/env bash
# Session 19, GPU call 1: the exact-GP UCI side-by-side (20 Adam steps, harness settings) with the
# code before this session (.before: git archive 788d5eb) and after it (AFTER, default the working tree), in the same call; GPyTorch
# 1.15.2 once, beside the "after" run. Run from the repository root with .uci and .before carried.
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, triton, gpytorch; print('torch', torch.__version__, 'triton', triton.__version__, 'gpytorch', gpytorch.__version__)"
REPO=$PWD
sets=elevators,bike,kin40k,protein,keggdirected
for version in before after; do
    root=${AFTER:-.}; libs=flashgp; [ "$version" = before ] && root=${BEFORE:-.before}
    [ "$version" = after ] && libs=flashgp,gpytorch
    (cd "$root" && PYTHONPATH=. timeout 270 python benchmarks/uci.py --data "$REPO/.uci" --device cuda --iters 20 \
        --timeout 90 --datasets $sets --libs $libs --out "$OUT/uci_$version") > "$OUT/uci_$version.log" 2>&1
    tail -n 14 "$OUT/uci_$version.log"
done
