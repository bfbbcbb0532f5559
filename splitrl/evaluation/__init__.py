"""Evaluation of trained policies and baselines on the same seeded episodes: the work behind
``splitrl evaluate``.

* :mod:`~splitrl.evaluation.runner`: roll policies out with common random numbers, record requests
* :mod:`~splitrl.evaluation.metrics`: rewards with t-intervals, paired gains, normalized score,
  latency, accuracy
* :mod:`~splitrl.evaluation.references`: the best causal baseline, ``clairvoyant-lookahead`` and
  ``channel-blind``, and what adapting is worth in a scenario
* :mod:`~splitrl.evaluation.episodes`: how many paired episodes an interval needs
* :mod:`~splitrl.evaluation.seeds`: learners across training seeds with rliable (IQM, stratified
  bootstrap intervals, probability of improvement)
* :mod:`~splitrl.evaluation.suite`: load runs, check they fit the env, evaluate every condition
* :mod:`~splitrl.evaluation.report`: markdown, CSV and JSON
* :mod:`~splitrl.evaluation.plots`: PNG plots (matplotlib, Agg backend; rliable for the aggregate)

The modules are imported on demand (loading runs pulls in torch), so that ``--help`` stays fast.
"""
