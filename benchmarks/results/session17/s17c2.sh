export PYTHONPATH=.
timeout -s INT 560 python examples/large_gpu_fit.py --n 1000000 --backend triton --iters 50 --test 100000 --root-rank 50 --eval-tol 0.01 --vecchia 30 --lanczos-iters 10 --checkpoint .calls/fit_1m.ckpt --checkpoint-every 5 > $OUT/c2_fit_1m_resumed_h200.txt 2>&1
cp .calls/fit_1m.ckpt $OUT/ 2>/dev/null; tail -n 5 $OUT/c2_fit_1m_resumed_h200.txt
