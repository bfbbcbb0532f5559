"""Trained policies that ship with splitrl, as run directories ``splitrl evaluate`` loads.

Each one is what ``splitrl train`` wrote (``config.yaml`` and ``model.zip``; the logs left out),
so it is reproduced by the command in :data:`PRETRAINED`, and evaluated like any run:
``splitrl evaluate $(python -c "from splitrl.pretrained import pretrained_run;
print(pretrained_run('sacd-hindsight-mpc-default'))")``.
"""

from __future__ import annotations

from pathlib import Path

#: the shipped runs, by name, with the command that trained each
PRETRAINED: dict[str, str] = {
    "sacd-hindsight-mpc-default": (
        "splitrl train --algo sacd-hindsight-mpc --scenario default --timesteps 20000 --seed 0 "
        "--eval-freq 0 --checkpoint-freq 0"
    ),
    "sacd-hindsight-mpc-geometric-anchored-default": (
        "splitrl train --algo sacd-hindsight-mpc-geometric-anchored --scenario default "
        "--timesteps 20000 --seed 0 --eval-freq 0 --checkpoint-freq 0"
    ),
    "sacd-hindsight-mpc-geometric-greedy-lte-gate": (
        "splitrl train --algo sacd-hindsight-mpc-geometric-replayed "
        "--scenario mcu-lte-video-timeout-gate --timesteps 20000 --seed 0 --eval-freq 0 "
        "--checkpoint-freq 0 --hyperparams behavior=greedy"
    ),
}


def pretrained_run(name: str) -> Path:
    """The run directory of the shipped policy ``name``.

    :raises ValueError: for a name that is not shipped
    :raises FileNotFoundError: when the installation lacks its files
    """
    if name not in PRETRAINED:
        raise ValueError(f"no shipped policy {name!r}; shipped: {', '.join(sorted(PRETRAINED))}")
    path = Path(__file__).resolve().parent / name
    for file in ("config.yaml", "model.zip"):
        if not (path / file).is_file():
            raise FileNotFoundError(f"shipped policy {name!r} lacks {path / file}")
    return path
