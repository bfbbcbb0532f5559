"""``python -m splitrl.models``: retrain the shipped early-exit network."""

from splitrl.models.training import main

main()
