"""The published per-request rules: Neurosurgeon, Edgent and greedy dynamic split computing.

Each decides from :meth:`~splitrl.envs.SplitComputingEnv.predict_actions` at the device's last
measured throughput: the profile's accuracy and mean payload of each action, the mean RTT, the
server load reported in the last reply, and the device's own backlog. None of them weighs what its
choice does to the next requests.
"""

from __future__ import annotations

import numpy as np

from splitrl.agents.baselines.fixed import lossless_bit_index
from splitrl.envs.actions import ActionTable
from splitrl.envs.split_computing import SplitComputingEnv

#: what the device heuristics know
DEVICE_ESTIMATES = (
    "the device's own estimates: its last measured throughput, the last reported server load, "
    "its backlog, the profile's mean payloads and accuracies"
)


class _LosslessHeuristic:
    """Shared by Neurosurgeon and Edgent: the canonical actions and the lossless bit of an env."""

    causal = True
    knows = DEVICE_ESTIMATES

    def __init__(self) -> None:
        self._table: ActionTable | None = None
        self._actions = np.zeros((0, 3), dtype=np.int64)
        self._lossless = 0

    def reset(self, env: SplitComputingEnv) -> None:
        """Index the env's canonical actions."""
        if self._table != env.actions:
            self._table = env.actions
            self._actions = np.array(env.actions.canonical_actions(), dtype=np.int64)
            self._lossless = lossless_bit_index(env.actions.bit_options)

    def _lossless_candidates(self, exit_index: int, table: ActionTable) -> np.ndarray:
        """Indices (into the canonical actions) of exit ``exit_index`` sent losslessly or kept local."""
        e, s, b = self._actions.T
        device_only = s >= table.exit_stages[exit_index]
        return np.flatnonzero((e == exit_index) & (device_only | (b == self._lossless)))


class NeurosurgeonPolicy(_LosslessHeuristic):
    """The split that minimizes the predicted latency of the full model, sent losslessly.

    Kang et al., "Neurosurgeon: Collaborative Intelligence Between the Cloud and Mobile Edge",
    ASPLOS 2017. Per request it predicts the latency of every partition point of the full DNN (no
    early exit, no quantization) from per-layer performance models and the current wireless
    bandwidth, and picks the fastest. Here the prediction is ``env.predict_actions()`` at the
    device's last measured throughput, restricted to the final exit with lossless transfer (or
    device-only).
    """

    name = "neurosurgeon"

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The fastest predicted split of the final exit."""
        self.reset(env)
        predicted = env.predict_actions()
        candidates = self._lossless_candidates(len(env.actions.exit_stages) - 1, env.actions)
        best = candidates[int(np.argmin(predicted.latency_s[candidates]))]
        return self._actions[best].copy()


class EdgentPolicy(_LosslessHeuristic):
    """The most accurate exit whose fastest split meets the deadline, sent losslessly.

    Li, Zhou, Chen, "Edge Intelligence: On-Demand Deep Learning Model Co-Inference with
    Device-Edge Synergy", MECOMM 2018, and "Edge AI: On-Demand Accelerating Deep Neural Network
    Inference via Edge Computing", IEEE Trans. Wireless Commun. 2019 (Edgent). Edgent jointly
    right-sizes the DNN (early exit) and partitions it: from the most accurate exit down, it takes
    the first exit whose lowest predicted latency over the partition points meets the latency
    requirement, at that partition point. Edgent does not quantize the transmitted tensor, so the
    transfer is lossless as in the paper. Exits are ranked by their unquantized accuracy in the
    profile; latencies are ``env.predict_actions()`` at the device's last measured throughput; the
    requirement is the reward's deadline. If no exit meets it, the fastest candidate is taken.
    """

    name = "edgent"

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The most accurate exit that meets the deadline, at its fastest split."""
        self.reset(env)
        predicted = env.predict_actions()
        deadline = env.reward_spec.deadline_s
        accuracy = env.profile.clean_accuracy()
        # Most accurate first; a later exit wins a tie (more computation for the same accuracy is
        # what Edgent's branch order assumes).
        exits = sorted(range(len(accuracy)), key=lambda e: (-accuracy[e], -e))
        fastest_overall: tuple[float, int] | None = None
        for exit_index in exits:
            candidates = self._lossless_candidates(exit_index, env.actions)
            best = candidates[int(np.argmin(predicted.latency_s[candidates]))]
            latency = float(predicted.latency_s[best])
            if latency <= deadline:
                return self._actions[best].copy()
            if fastest_overall is None or latency < fastest_overall[0]:
                fastest_overall = (latency, int(best))
        assert fastest_overall is not None
        return self._actions[fastest_overall[1]].copy()


class GreedyPolicy:
    """Dynamic split computing with our codec: the action of highest predicted reward, per request.

    Bakhtiarnia et al., "Dynamic Split Computing for Efficient Deep Edge Intelligence", ICASSP 2023,
    and Matsubara, Levorato, Restuccia, "Split Computing and Early Exiting for Deep Learning
    Applications: Survey and Research Challenges", ACM Computing Surveys 2022: choose the split (here
    also the exit and the bit-width) per request from the current network condition. This myopic
    controller takes the argmax of ``env.predict_actions().reward`` over all canonical actions at
    the device's last measured throughput.

    It collapses wherever frames can queue. It weighs only this request's reward, and a request
    that already waited long enough misses the deadline whatever it does, so every action pays the
    same miss penalty and the argmax goes to the slow, accurate ones. They leave an even longer
    wait to the next frame, which misses its deadline too: the backlog never drains. Pricing the
    backlog is what ``robust-mpc`` adds.
    """

    name = "greedy"
    causal = True
    knows = DEVICE_ESTIMATES

    def reset(self, env: SplitComputingEnv) -> None:
        """Nothing to reset."""

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        """The action of highest predicted reward."""
        return env.predict_actions().best()
