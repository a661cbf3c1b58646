export PYTHONPATH=.
timeout 150 python .calls/kv_ab.py records 1000000 "default;128,32,4,2;128,64,4,1;128,64,4,2;128,32,4,3" 2>&1 | grep -v Warn | tee $OUT/sweep_1m.jsonl
timeout 60 python .calls/grad_time.py 2>&1 | grep -v Warn | tee $OUT/grad_1m.jsonl
timeout 200 python examples/large_gpu_fit.py --n 1000000 --raw-parameters benchmarks/results/session8/million_fit_history_h200.json --backend triton --precision fp16x3 --iters 2 --test 10 --root-rank 2 --eval-tol 1 --precond-rank 800 --lanczos-iters 20 2>&1 | tee $OUT/step_1m.txt | tail -12
