export PYTHONPATH=.
(timeout 230 python -m pytest -q tests/backends/triton_cases.py tests/backends/triton_symmetric_cases.py -p no:cacheprovider 2>&1 | tail -6) > $OUT/tests.txt 2>&1
timeout 120 python benchmarks/tune_kernels.py --ops sym_matmul --precisions fp16x3 --d 3 --t 11 --n 100000 --block-m 64 128 --block-n 32 64 --num-warps 4 8 --num-stages 1 --profile matern52 --out /tmp/tune_sym > $OUT/tune_sym_1m.txt 2>&1
for prof in rbf matern52; do
timeout 60 python benchmarks/tune_kernels.py --ops matmul --precisions fp16x3 --d 3 --t 11 --n 1000000 --block-m 128 --block-n 32 64 --num-warps 4 --num-stages 1 --profile $prof --out /tmp/tune_1m_$prof >> $OUT/tune_sym_1m.txt 2>&1
done
timeout 100 python benchmarks/uci.py --device cuda --iters 20 --timeout 90 --datasets synth-80000 --libs flashgp --backend dense --out /tmp/synth80k_dense > /dev/null 2>&1; cp /tmp/synth80k_dense.md $OUT/synth80k_dense.md
for code in new old; do
if [ $code = old ]; then PP=.calls/old; else PP=.; fi
PYTHONPATH=$PP timeout 70 python $PP/benchmarks/uci.py --data .uci --device cuda --iters 20 --timeout 60 --datasets elevators --libs flashgp --out /tmp/ab_$code > /dev/null 2>&1; echo "## $code" >> $OUT/ab.md; cat /tmp/ab_$code.md >> $OUT/ab.md
done
cat $OUT/tests.txt $OUT/tune_sym_1m.txt; grep -i "synth\|flashgp" $OUT/synth80k_dense.md | head -5; grep -i "elevators\|##" $OUT/ab.md
