set -x
export PYTHONPATH=.
nvidia-smi --query-gpu=name --format=csv,noheader; python -c "import torch, triton; print(torch.__version__, triton.__version__)"
timeout 150 python .calls/block_build.py 1000000 400,800 128,256 2>&1 | tee $OUT/build.log
timeout 200 python examples/large_gpu_fit.py --n 1000000 --raw-parameters benchmarks/results/session8/million_fit_history_h200.json --backend triton --precision fp16x3 --iters 3 --test 10 --root-rank 2 --eval-tol 1 --precond-rank 400 --precond-blocks 256 --lanczos-iters 20 2>&1 | tee $OUT/step_r400_b256_l20.log
timeout 200 python examples/large_gpu_fit.py --n 1000000 --raw-parameters benchmarks/results/session8/million_fit_history_h200.json --backend triton --precision fp16x3 --iters 3 --test 10 --root-rank 2 --eval-tol 0.01 --precond-rank 400 --precond-blocks 256 --lanczos-iters 10 2>&1 | tee $OUT/step_r400_b256_l10.log
export PYTHONPATH=.
timeout -s INT 60 python .calls/block_1m.py 200000 "400,0;400,64;400,256" mll 200 2>&1 | tee $OUT/mll_200k.log
timeout -s INT 130 python .calls/block_1m.py 1000000 "400,0;400,256" mll 60 2>&1 | tee $OUT/mll_1m.log
timeout -s INT 175 python .calls/block_1m.py 1000000 "400,0;400,256" solve 95 2>&1 | tee $OUT/solve_1m.log
for b in 0 256; do timeout 100 python benchmarks/uci.py --data .uci --device cuda --iters 20 --timeout 45 --datasets elevators,kin40k,protein --libs flashgp --precond-blocks $b --out $OUT/uci_b$b 2>&1 | grep -v "^\[.*running" ; done
export PYTHONPATH=.
for b in 0 256; do timeout 100 python benchmarks/uci.py --data .uci --device cuda --iters 20 --timeout 45 --datasets elevators,kin40k,protein --libs flashgp --precond-blocks $b --out $OUT/uci_fix_b$b 2>&1 | grep -v "^\[.*running" ; done
timeout -s INT 290 python .calls/block_1m.py 1000000 "400,256" solve 330 2>&1 | tee $OUT/solve_1m_full.log
export PYTHONPATH=.
timeout 90 python .calls/block_parts.py elevators,kin40k,protein 2>&1 | tee $OUT/parts.log
timeout 110 python benchmarks/uci.py --data .uci --device cuda --iters 20 --timeout 50 --datasets elevators,kin40k --libs flashgp --precond-blocks 256 --out $OUT/uci_cache_b256 2>&1 | grep -v "^\[.*running"
