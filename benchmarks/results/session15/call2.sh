export PYTHONPATH=.
export CUDA_LAUNCH_BLOCKING=1
B=.calls/gram_probe.py
for args in "200000 200000 128,64,4,1 spatial rbf" "500000 500000 128,64,4,1 spatial rbf" "1000000 100000 128,64,4,1 spatial rbf" "100000 1000000 128,64,4,1 spatial rbf" "1000000 1000000 128,64,4,1 identity rbf" "1000000 1000000 128,64,4,1 spatial rbf" "1000000 1000000 128,32,4,1 spatial rbf" "1000000 1000000 128,64,4,1 spatial matern52"; do
  timeout 100 python $B $args 2>&1 | grep -E "OK|FAIL|Error|error" | head -3
done
