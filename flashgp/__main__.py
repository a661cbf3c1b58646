# `python -m flashgp ...`: the command line of flashgp.cli (fit, predict, demo, info).
# With no subcommand it runs the demo fit on the packaged dataset, as `flashgp demo` does.
import sys

from .cli import main

sys.exit(main())
