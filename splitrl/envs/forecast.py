"""What a device can predict for every action before it decides, in simulation and on a real device.

The env's time model at the device's own estimates (a constant uplink capacity, the mean RTT, the
server load the last reply reported, the device's backlog) gives the outcome of every canonical
action of the current request: :class:`ActionForecast` computes it, and
:meth:`SplitComputingEnv.predict_actions <splitrl.envs.split_computing.SplitComputingEnv.predict_actions>`
is that forecast for the env's current request.

Causal rules and learned policies that read these predictions (``robust-mpc``, the predicted-value
features of ``sacd-prior`` and ``sacd-hindsight``) see the world through :class:`ForecastView`: the
device's knowledge, the scenario's models and the forecast of the current request. A
``SplitComputingEnv`` is one; :class:`DeviceForecast` is another, for a real device: the device
runtime feeds it the arrival and start time of each request, and its knowledge is the one the
runtime builds the observation from, so the same code computes the same features there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from splitrl.envs.actions import ActionTable
from splitrl.envs.observation import DeviceKnowledge
from splitrl.envs.reward import RewardSpec
from splitrl.envs.rtt import RTTModel
from splitrl.envs.scenarios import ScenarioParts
from splitrl.envs.server_load import ServerLoad
from splitrl.envs.time_model import RequestModel, ShaperBucket

if TYPE_CHECKING:
    from splitrl.envs.split_computing import SplitComputingEnv


@dataclass(frozen=True)
class ActionOutcomes:
    """The outcome of every canonical action for one request.

    From :meth:`SplitComputingEnv.evaluate_actions` (true) or
    :meth:`SplitComputingEnv.predict_actions` (the device's prediction). Arrays are indexed like
    ``actions`` (canonical ``(e, s, b)`` triples, in flat-index order); times are in seconds.

    :param actions: the canonical actions, shape ``(n, 3)``
    :param reward: reward of each action
    :param latency_s: end-to-end latency, from the request's arrival (its wait included)
    :param energy_j: device energy
    :param payload_bytes: the payload's bytes (0 when device-only; the whole payload also when the
        device gives up its transfer)
    :param correct: correctness as the reward counts it
    :param device_free_s: when the device could start the next request, counted from this
        request's arrival (its wait included): what the action leaves to the next frames
    :param wait_s: how long this request waited for the device before it started (the same for
        every action)
    :param gave_up: whether the device gives up the action's transfer at the scenario's timeout
        and answers itself (``None``: never)
    """

    actions: np.ndarray
    reward: np.ndarray
    latency_s: np.ndarray
    energy_j: np.ndarray
    payload_bytes: np.ndarray
    correct: np.ndarray
    device_free_s: np.ndarray
    wait_s: float
    gave_up: np.ndarray | None = None

    @property
    def offloaded(self) -> np.ndarray:
        """Whether each action is answered by the server: it sends a payload, and the device
        does not give its transfer up (no round trip or server queue then)."""
        sent = self.payload_bytes > 0
        return sent if self.gave_up is None else sent & ~self.gave_up

    def best(self) -> np.ndarray:
        """The action with the highest reward (ties go to the lowest flat index)."""
        return self.actions[int(np.argmax(self.reward))]


class ActionForecast:
    """The predicted outcome of every canonical action of a request, from estimates only.

    Uses the profile's accuracy and mean payload of each action, one RTT, the server's mean queueing
    delay at an assumed load and a constant uplink capacity: the env's time model
    (:meth:`RequestModel.predict`), computed for all actions at once.

    :param request_model: the env's time model of one request
    :param actions: the canonical actions ``(n, 3)``, in flat-index order
    :param payload_bytes: the mean payload of each canonical action (0 when device-only)
    :param accuracy: the expected correctness of each canonical action
    :param rtt_s: the round-trip time to assume (the RTT model's mean)
    :param server_load: the server's service model (only its effect of a load is used)
    :param fallback_accuracy: the expected correctness of each canonical action when the device
        gives up its transfer and answers itself (the device-only accuracy of its exit); needed
        when the time model has a transfer timeout
    """

    def __init__(
        self,
        request_model: RequestModel,
        actions: np.ndarray,
        payload_bytes: np.ndarray,
        accuracy: np.ndarray,
        rtt_s: float,
        server_load: ServerLoad,
        fallback_accuracy: np.ndarray | None = None,
    ) -> None:
        if request_model.transfer_timeout_s is not None and fallback_accuracy is None:
            raise ValueError("a time model with a transfer timeout needs the fallback accuracy")
        self.request_model = request_model
        self.actions = actions
        self.payload_bytes = payload_bytes
        self.accuracy = accuracy
        self.fallback_accuracy = accuracy if fallback_accuracy is None else fallback_accuracy
        self.rtt_s = rtt_s
        self.server_load = server_load

    def predict(
        self,
        arrival_s: float,
        start_s: float,
        capacity_bps: float,
        load: float,
        reward_spec: RewardSpec,
        bucket: ShaperBucket | None = None,
    ) -> ActionOutcomes:
        """The outcome of every canonical action of a request that arrived at ``arrival_s`` and
        starts at ``start_s`` (later when the device was still busy), both in seconds.

        :param capacity_bps: the uplink capacity to assume
        :param load: the server's utilization to assume
        :param reward_spec: the reward of a request
        :param bucket: the link's shaper bucket after the previous transfer (``None``: full)
        """
        if not capacity_bps > 0:
            raise ValueError(f"capacity_bps must be positive, got {capacity_bps}")
        device_free, done, energy_j, gave_up = self.request_model.predict(
            start_s,
            self.payload_bytes,
            capacity_bps,
            load,
            self.rtt_s,
            self.server_load,
            bucket,
        )
        latency_s = done - arrival_s
        correct = np.where(gave_up, self.fallback_accuracy, self.accuracy)
        return ActionOutcomes(
            actions=self.actions.copy(),
            reward=reward_spec.rewards(correct, latency_s, energy_j),
            latency_s=latency_s,
            energy_j=energy_j,
            payload_bytes=self.payload_bytes.copy(),
            correct=correct,
            device_free_s=device_free - arrival_s,
            wait_s=start_s - arrival_s,
            gave_up=gave_up,
        )


class ForecastView(Protocol):
    """What a causal predictor of every action's outcome reads: the device's knowledge, the
    scenario's models and the forecast of the current request.

    A :class:`~splitrl.envs.split_computing.SplitComputingEnv` is one (in simulation), a
    :class:`DeviceForecast` another (on a real device).
    """

    knowledge: DeviceKnowledge
    actions: ActionTable
    reward_spec: RewardSpec
    rtt: RTTModel
    server_load: ServerLoad
    frame_interval_s: float

    @property
    def server_job_s(self) -> float:
        """The server's mean service time of one job at no load (the queueing model's unit)."""
        ...

    @property
    def request_start_s(self) -> float:
        """When the device starts the current request (its own clock, in seconds)."""
        ...

    def predict_actions(self, capacity_bps: float | None = None) -> ActionOutcomes:
        """The predicted outcome of every canonical action of the current request."""
        ...


class DeviceForecast:
    """:meth:`SplitComputingEnv.predict_actions` for the requests of a real device.

    The scenario's models come from ``env`` (built from the scenario the policy trained in, never
    stepped); the knowledge is the device's own (the object its runtime builds the observation
    from). Before each decision the runtime says when the request arrived and when the device
    started it (:meth:`at_request`). The link's shaper state is not observed on a device, so the
    forecast assumes a full bucket.

    :param env: an env of the policy's scenario (its models and time model)
    :param knowledge: the device's knowledge
    :param frame_interval_s: the request period actually used (default: the scenario's)
    """

    def __init__(
        self,
        env: SplitComputingEnv,
        knowledge: DeviceKnowledge,
        frame_interval_s: float | None = None,
    ) -> None:
        self.knowledge = knowledge
        self.actions = env.actions
        self.reward_spec = env.reward_spec
        self.rtt = env.rtt
        self.server_load = env.server_load
        self.parts: ScenarioParts = env.parts
        self.frame_interval_s = (
            env.frame_interval_s if frame_interval_s is None else frame_interval_s
        )
        self.forecast = env.forecast
        self.arrival_s = 0.0
        self.start_s = 0.0

    @property
    def server_job_s(self) -> float:
        """The server's mean service time of one job at no load."""
        return self.parts.server_job_s

    @property
    def request_start_s(self) -> float:
        """When the device starts the current request (:meth:`at_request`)."""
        return self.start_s

    def at_request(self, arrival_s: float, start_s: float) -> None:
        """The current request arrived at ``arrival_s`` and the device starts it at ``start_s``."""
        if start_s < arrival_s:
            raise ValueError(f"a request cannot start ({start_s}) before it arrives ({arrival_s})")
        self.arrival_s = arrival_s
        self.start_s = start_s

    def predict_actions(self, capacity_bps: float | None = None) -> ActionOutcomes:
        """The predicted outcome of every canonical action of the current request.

        :param capacity_bps: the capacity to assume; default: the device's latest throughput
            measurement
        """
        capacity = self.knowledge.throughput_estimate_bps if capacity_bps is None else capacity_bps
        return self.forecast.predict(
            self.arrival_s, self.start_s, capacity, self.knowledge.server_load, self.reward_spec
        )
