export PYTHONPATH=.
for n in 40000 80000; do for b in dense triton; do
timeout 110 python benchmarks/uci.py --device cuda --iters 20 --timeout 100 --datasets synth-$n --libs flashgp --backend $b --out /tmp/s_${n}_$b > /dev/null 2>&1
echo "## synth-$n backend $b" >> $OUT/dense_vs_fused.md; grep -E "^\| synth" /tmp/s_${n}_$b.md >> $OUT/dense_vs_fused.md
done; done
head -12 /tmp/s_80000_triton.md > $OUT/header.md
cat $OUT/dense_vs_fused.md
