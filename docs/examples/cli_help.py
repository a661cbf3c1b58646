"""Print the ``--help`` of the ``flashgp`` command and of each subcommand (one process for all).

    python docs/examples/cli_help.py
"""
from __future__ import annotations

import contextlib

from flashgp.cli import main

for command in ([], ["fit"], ["predict"], ["demo"], ["info"]):
    print(f"$ flashgp {' '.join(command + ['--help'])}", flush=True)
    with contextlib.suppress(SystemExit):
        main(command + ["--help"])
    print(flush=True)
