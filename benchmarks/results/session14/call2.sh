export PYTHONPATH=.
P=benchmarks/results/session8/million_fit_history_h200.json
timeout 150 python benchmarks/product_accuracy.py --n 20000 --d 3 20 --profiles rbf matern52 rq --precisions fp32 tf32x3 fp16x3 --out $OUT/accuracy.json > $OUT/accuracy.txt 2>&1
timeout 200 python benchmarks/tune_kernels.py --ops matmul --precisions fp16x3 --d 3 --t 11 --n 100000 --block-m 64 128 256 --block-n 32 64 128 --num-warps 4 8 --num-stages 1 --profile matern52 --out /tmp/tune_m52 > $OUT/tune_m52.txt 2>&1
cp /tmp/tune_m52/tune.json $OUT/tune_m52.json
timeout 100 python benchmarks/gpu_kernels.py --n 100000 --d 20 --t 11 --kernel matern52 --skip-blocked --repeats 5 --precisions tf32x3 fp16x3 --ops matmul --out /tmp/k_d20 > /dev/null 2>&1; cat /tmp/k_d20.md >> $OUT/tune_m52.txt
for L in 20 5; do
timeout 170 python examples/large_gpu_fit.py --n 1000000 --raw-parameters $P --backend triton --precision fp16x3 --iters 2 --test 10 --root-rank 2 --eval-tol 1 --precond-rank 800 --lanczos-iters $L > $OUT/step1m_L$L.txt 2>&1
done
cat $OUT/accuracy.txt | tail -30; cat $OUT/tune_m52.txt; grep -i "step\|peak\|iterations" $OUT/step1m_L*.txt
