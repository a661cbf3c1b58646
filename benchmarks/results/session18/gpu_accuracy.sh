#!/usr/bin/env bash
# Session 18, GPU call: every prediction path against float64 Cholesky at n = 5,000 and 20,000.
# Run from the repository root on the device machine; logs under $OUT.
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python benchmarks/variance_accuracy.py --device cuda --n 5000,20000 --m 200 --out "$OUT/accuracy" \
    > "$OUT/accuracy.log" 2>&1
tail -n 130 "$OUT/accuracy.log" | grep -v "^|"
