"""The one rollout loop: run a policy on seeded episodes (common random numbers), record every request.

``SplitComputingEnv.reset(seed)`` seeds private generators for the channel, the server load, the
RTT and the request stream, so every policy run with the same seeds faces the same capacity over
time and the same sequence of samples, whatever its actions do to the backlog. Differences between
policies are then differences of decisions, not of luck, and far fewer episodes tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from splitrl.agents.policy_interface import Policy
from splitrl.envs.split_computing import SplitComputingEnv

#: the bit index recorded for device-only requests (nothing is sent, no bit option applies)
LOCAL_BITS = -1


@dataclass(frozen=True)
class Rollout:
    """Every request of one policy's evaluation episodes; arrays of shape ``(episodes, horizon)``.

    :param name: the policy's name
    :param seeds: the episodes' reset seeds
    :param reward: reward per request
    :param latency_s: end-to-end latency
    :param energy_j: device energy
    :param payload_bytes: bytes sent (0 when device-only)
    :param correct: correctness as the env reports it
    :param deadline_missed: whether the latency exceeded the deadline
    :param capacity_bps: true uplink capacity when the request started
    :param sample_index: the profile sample served
    :param exit: exit index of the canonical action
    :param split: split index of the canonical action
    :param bits: bit option index of the canonical action, :data:`LOCAL_BITS` when device-only
    :param n_exits: exits of the action space
    :param n_splits: splits of the action space
    """

    name: str
    seeds: tuple[int, ...]
    reward: np.ndarray
    latency_s: np.ndarray
    energy_j: np.ndarray
    payload_bytes: np.ndarray
    correct: np.ndarray
    deadline_missed: np.ndarray
    capacity_bps: np.ndarray
    sample_index: np.ndarray
    exit: np.ndarray
    split: np.ndarray
    bits: np.ndarray
    n_exits: int
    n_splits: int

    @property
    def episodes(self) -> int:
        """Number of episodes."""
        return len(self.seeds)


_FLOAT_FIELDS = ("reward", "latency_s", "energy_j", "correct", "capacity_bps")
_INT_FIELDS = ("payload_bytes", "sample_index", "exit", "split", "bits")


def run_episodes(
    policy: Policy,
    env: SplitComputingEnv,
    seeds: Sequence[int],
    *,
    on_episode: Callable[[], object] | None = None,
) -> Rollout:
    """Run ``policy`` for one episode per seed and record every request.

    :param policy: the decision maker
    :param env: the env (reset with each seed; its horizon fixes the episode length)
    :param seeds: reset seeds, one episode each
    :param on_episode: called after each episode (progress bars)
    """
    if len(seeds) == 0:
        raise ValueError("run_episodes needs at least one seed")
    shape = (len(seeds), env.horizon)
    records = {name: np.zeros(shape, dtype=np.float64) for name in _FLOAT_FIELDS}
    records.update({name: np.zeros(shape, dtype=np.int64) for name in _INT_FIELDS})
    missed = np.zeros(shape, dtype=bool)
    is_device_only = env.actions.is_device_only
    for episode, seed in enumerate(seeds):
        observation, _ = env.reset(seed=int(seed))
        policy.reset(env)
        for step in range(env.horizon):
            action = policy.act(env, observation)
            observation, reward, terminated, truncated, info = env.step(action)
            e, s, b = (int(v) for v in info["canonical_action"])
            records["reward"][episode, step] = reward
            records["latency_s"][episode, step] = info["latency_s"]
            records["energy_j"][episode, step] = info["energy_j"]
            records["correct"][episode, step] = info["correct"]
            records["capacity_bps"][episode, step] = info["capacity_bps"]
            records["payload_bytes"][episode, step] = info["payload_bytes"]
            records["sample_index"][episode, step] = info["sample_index"]
            records["exit"][episode, step] = e
            records["split"][episode, step] = s
            records["bits"][episode, step] = LOCAL_BITS if is_device_only(e, s) else b
            missed[episode, step] = info["deadline_missed"]
            if terminated or truncated:
                break
        if on_episode is not None:
            on_episode()
    n_exits, n_splits, _ = env.actions.nvec
    return Rollout(
        name=policy.name,
        seeds=tuple(int(seed) for seed in seeds),
        deadline_missed=missed,
        n_exits=n_exits,
        n_splits=n_splits,
        **records,
    )
