"""Evaluation of trained policies and baselines on the same seeded episodes: the work behind
``splitrl evaluate``.

* :mod:`~splitrl.evaluation.runner`: roll policies out with common random numbers, record requests
* :mod:`~splitrl.evaluation.metrics`: rewards with t-intervals, latency, accuracy, normalized score
* :mod:`~splitrl.evaluation.suite`: load runs, check they fit the env, evaluate every condition
* :mod:`~splitrl.evaluation.report`: markdown, CSV and JSON
* :mod:`~splitrl.evaluation.plots`: PNG plots (matplotlib, Agg backend)

The modules are imported on demand (loading runs pulls in torch), so that ``--help`` stays fast.
"""
