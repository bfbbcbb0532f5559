"""Evaluate trained policies against the baselines: ``python evaluate.py runs/RUN --scenario default``.

A thin entry point over ``splitrl evaluate``; ``python evaluate.py --help`` lists the flags.
"""

import sys

from splitrl.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
