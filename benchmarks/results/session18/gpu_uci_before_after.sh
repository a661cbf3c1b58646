#!/usr/bin/env bash
# Session 18, GPU call: the exact-GP UCI side-by-side (flashgp, 20 Adam steps) with the code
# before this session (.before: git archive 11b370f) and after it, in the same call; then the
# accuracy grid. Run from the repository root on the device machine with .uci and .before carried.
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
sets=elevators,bike,kin40k,protein,keggdirected
for version in before after; do
    root=.; [ "$version" = before ] && root=.before
    (cd "$root" && PYTHONPATH=. python benchmarks/uci.py --data "$OLDPWD/.uci" --device cuda --iters 20 \
        --timeout 90 --datasets $sets --libs flashgp --out "$OUT/uci_$version") > "/tmp/uci_$version.log" 2>&1
    tail -n 12 "/tmp/uci_$version.log"
done
timeout 330 python benchmarks/variance_accuracy.py --device cuda --n 20000 --m 200 --out "$OUT/accuracy" \
    > /tmp/accuracy.log 2>&1
grep -v "^|" /tmp/accuracy.log | tail -n 70
