"""Is a scenario's decision really state dependent? Statistics of the oracle's choices.

A scenario in which one action is almost always best teaches nothing: a static rule would do. The
measure used by the tests and ``benchmarks/bench_env.py``: run the oracle (the argmax of the exact
outcome of every action) and look at how its choices spread over actions and (exit, split) pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from splitrl.envs.split_computing import SplitComputingEnv


@dataclass(frozen=True)
class OracleStatistics:
    """How the oracle's actions spread.

    :param requests: number of requests decided
    :param top_action_share: share of the most frequent action
    :param pair_shares: share of every (exit, split) pair, most frequent first
    :param mean_reward: the oracle's mean reward per request
    """

    requests: int
    top_action_share: float
    pair_shares: dict[tuple[int, int], float]
    mean_reward: float

    def pairs_above(self, share: float) -> int:
        """How many (exit, split) pairs the oracle chooses for at least ``share`` of requests."""
        return sum(1 for value in self.pair_shares.values() if value >= share)

    def is_nontrivial(
        self, max_top_share: float = 0.6, min_pairs: int = 3, pair_share: float = 0.05
    ) -> bool:
        """The criterion of a state-dependent scenario: no action dominates and several
        (exit, split) pairs each matter."""
        return self.top_action_share < max_top_share and self.pairs_above(pair_share) >= min_pairs


def oracle_statistics(env: SplitComputingEnv, episodes: int, seed: int) -> OracleStatistics:
    """Run the oracle for ``episodes`` seeded episodes and summarize its choices."""
    actions: Counter[tuple[int, int, int]] = Counter()
    total_reward = 0.0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        truncated = False
        while not truncated:
            action = env.evaluate_actions().best()
            _, reward, _, truncated, _ = env.step(action)
            actions[(int(action[0]), int(action[1]), int(action[2]))] += 1
            total_reward += reward
    requests = sum(actions.values())
    pairs: Counter[tuple[int, int]] = Counter()
    for (e, s, _), count in actions.items():
        pairs[(e, s)] += count
    return OracleStatistics(
        requests=requests,
        top_action_share=max(actions.values()) / requests,
        pair_shares={pair: count / requests for pair, count in pairs.most_common()},
        mean_reward=total_reward / requests,
    )
