"""profile_step.py with the stored-product threshold set: python prof_variant.py MIN_ENTRIES args..."""
import sys
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import flashgp.operators.kernel as kop
kop.STORED_PRODUCT_MIN_ENTRIES = int(float(sys.argv[1]))
import profile_step
profile_step.main(sys.argv[2:])
