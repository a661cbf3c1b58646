export PYTHONPATH=.
timeout 420 python -m pytest tests/backends/triton_cases.py -q -p no:cacheprovider -k "point_records or (test_kv_matmul and not stored) or fp16x3_keeps or fused_matmul" 2>&1 | tail -15 | tee $OUT/tests_gpu.txt
