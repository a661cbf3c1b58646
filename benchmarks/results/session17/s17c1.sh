export PYTHONPATH=.
H=benchmarks/results/session8/million_fit_history_h200.json
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/env_h200.txt; python -c "import torch, triton; print(torch.__version__, triton.__version__)" >> $OUT/env_h200.txt
timeout -s INT 100 python .calls/vecchia_parts.py 1000000 30 5,10,20 > $OUT/c1_parts_1m_h200.txt 2>&1
timeout -s INT 150 python examples/large_gpu_fit.py --n 1000000 --raw-parameters $H --backend triton --iters 2 --test 100000 --root-rank 50 --eval-tol 0.01 --vecchia 30 --lanczos-iters 10 > $OUT/c1_final_state_1m_h200.txt 2>&1
timeout -s INT 310 python examples/large_gpu_fit.py --n 1000000 --backend triton --iters 50 --test 100000 --root-rank 50 --eval-tol 0.01 --vecchia 30 --lanczos-iters 10 --checkpoint $OUT/fit_1m.ckpt --checkpoint-every 5 > $OUT/c1_fit_1m_h200.txt 2>&1
tail -4 $OUT/*.txt
