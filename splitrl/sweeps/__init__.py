"""Experiment grids and hyperparameter searches: ``splitrl sweep`` and ``splitrl tune``.

| module | one job |
|---|---|
| ``cells`` | the cells (one training, one evaluation), trials, cell files |
| ``grid`` | a sweep file (YAML) and the grid of cells it spans |
| ``pool_runner`` | run trials in a process pool on this machine |
| ``ray_runner`` | run trials as Ray Tune trials, and the Tune search (the only module importing Ray) |
| ``report`` | aggregate the cell files over training seeds with rliable |
| ``search_spaces`` | hyperparameter search spaces per learner |
| ``sweep``, ``tune`` | the two commands |

Ray is the optional extra ``splitrl[scale]``; nothing outside ``ray_runner`` imports it.
"""
