export PYTHONPATH=.
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv > $OUT/env.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" >> $OUT/env.txt
(timeout 200 python -m pytest -q tests/backends/triton_cases.py -k "fp16 or (kv_matmul and not stored)" -p no:cacheprovider 2>&1 | tail -4) > $OUT/tests.txt 2>&1
for prof in rbf matern52; do
timeout 170 python benchmarks/tune_kernels.py --ops matmul --precisions tf32x3 fp16x3 --d 3 --t 11 --n 100000 --block-m 64 128 256 --block-n 32 64 --num-warps 4 8 --num-stages 1 2 --profile $prof --out $OUT/tune_$prof > $OUT/tune_$prof.txt 2>&1
done
timeout 120 python benchmarks/gpu_kernels.py --n 1000000 --d 3 --t 11 --kernel rbf --skip-blocked --repeats 3 --precisions tf32x3 fp16x3 --ops matmul --out /tmp/k1m_rbf > $OUT/k1m.txt 2>&1
timeout 120 python benchmarks/gpu_kernels.py --n 1000000 --d 3 --t 11 --kernel matern52 --skip-blocked --repeats 3 --precisions tf32x3 fp16x3 --ops matmul --out /tmp/k1m_m52 >> $OUT/k1m.txt 2>&1
cat $OUT/tests.txt; grep -i "best\|default" $OUT/tune_*.txt; grep -v "^\s*$" $OUT/k1m.txt | tail -12
cp /tmp/k1m_rbf.md /tmp/k1m_m52.md $OUT/; rm -rf $OUT/tune_rbf $OUT/tune_matern52; ls $OUT
