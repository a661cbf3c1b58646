export PYTHONPATH=.
for v in 30 0; do
timeout -s INT 95 python benchmarks/uci.py --data .uci --device cuda --iters 20 --timeout 60 --datasets elevators,kin40k,protein --libs flashgp --vecchia $v --out $OUT/c3_uci_vecchia${v}_h200 > $OUT/c3_uci_vecchia${v}_log.txt 2>&1
done
cat $OUT/*.md | grep -v "^$" | head -40
