export PYTHONPATH=.
timeout 60 python .calls/atomics.py 2>&1 | grep -v Warn | tee $OUT/atomics.txt
PYTHONPATH=.calls/prev timeout 100 python .calls/kv_ab.py strided 100000,1000000 "default" 2>&1 | grep -v Warn | tee $OUT/ab.jsonl
timeout 150 python .calls/kv_ab.py records 100000 "default;128,64,4,1;64,64,4,1;64,32,4,1;256,32,8,1;128,32,4,2" 2>&1 | grep -v Warn | tee -a $OUT/ab.jsonl
timeout 100 python .calls/kv_ab.py records 1000000 "default;64,64,4,1" 2>&1 | grep -v Warn | tee -a $OUT/ab.jsonl
timeout 100 python benchmarks/product_accuracy.py --n 20000 --d 3 8 --profiles rbf matern52 --precisions tf32x3 fp16x3 --out $OUT/accuracy.json 2>&1 | tail -15 | tee $OUT/accuracy.txt
