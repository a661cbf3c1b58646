export PYTHONPATH=.
timeout 150 python benchmarks/tune_kernels.py --ops sym_matmul matmul --precisions fp16x3 --d 3 --t 11 --n 100000 --block-m 64 128 --block-n 32 64 --num-warps 4 8 --num-stages 1 --profile matern52 --out /tmp/tune_sym > $OUT/tune_sym_1m.txt 2>&1
for prof in rbf matern52; do
timeout 80 python benchmarks/tune_kernels.py --ops matmul --precisions fp16x3 --d 3 --t 11 --n 1000000 --block-m 128 --block-n 32 64 --num-warps 4 --num-stages 1 --profile $prof --out /tmp/tune_1m_$prof >> $OUT/tune_sym_1m.txt 2>&1
done
for b in dense triton; do
timeout 120 python benchmarks/uci.py --device cuda --iters 20 --timeout 110 --datasets synth-80000 --libs flashgp --backend $b --precision fp16x3 --out /tmp/synth80k_$b > /dev/null 2>&1; cat /tmp/synth80k_$b.md >> $OUT/synth80k.md
done
for code in new old; do
if [ $code = old ]; then PP=.calls/old; else PP=.; fi
PYTHONPATH=$PP timeout 150 python $PP/benchmarks/uci.py --data .uci --device cuda --iters 20 --timeout 140 --datasets elevators,bike --libs flashgp --out /tmp/ab_$code > /dev/null 2>&1; echo "## $code" >> $OUT/ab.md; cat /tmp/ab_$code.md >> $OUT/ab.md
done
cat $OUT/tune_sym_1m.txt; grep -i "synth\|flashgp" $OUT/synth80k.md | head; grep -i "elevators\|bike\|##" $OUT/ab.md
