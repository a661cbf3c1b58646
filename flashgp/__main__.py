# `python -m flashgp`: runs the demo fit on the packaged dataset (see flashgp/demo.py).
# The full command line arrives with flashgp.cli.
from .demo import main

main()
