"""Seeds and sizes of an evaluation (no heavy imports: the command line's ``--help`` reads them)."""

#: first reset seed of the evaluation episodes: apart from the training envs (``seed + rank``, and
#: ``seed + timesteps`` when resumed) and the evaluations during training (``seed + 10 000``)
DEFAULT_EVAL_SEED = 1_000_000
#: evaluation episodes per condition: enough that the paired 95% interval of the best causal
#: baseline against ``channel-blind`` is at most 0.005 reward per request in the default scenario
#: (216 by the spread measured with ``python -m benchmarks.bench_env --scenarios none
#: --episode-study 40``, see docs/evaluation.md; ``--episodes`` trades that for time)
DEFAULT_EVAL_EPISODES = 216
#: first seed and number of the training-channel episodes the best static configuration is fitted on
DEFAULT_FIT_SEED = 0
DEFAULT_FIT_EPISODES = 3
