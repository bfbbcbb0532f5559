"""Train a split-computing policy: ``python train.py --algo sacd --scenario default``.

A thin entry point over ``splitrl train``; ``python train.py --help`` lists the flags.
"""

import sys

from splitrl.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
