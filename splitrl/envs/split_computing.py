"""SplitComputingEnv: one step is one inference request on an edge device."""

from __future__ import annotations

from typing import Any, Literal, overload

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.envs.actions import ActionTable
from splitrl.envs.channels.base import Channel, private_generator
from splitrl.envs.exit_gate import NOT_STOPPED, ExitGate
from splitrl.envs.forecast import ActionForecast, ActionOutcomes
from splitrl.envs.link_quality import LinkQualityModel, LinkQualityReport
from splitrl.envs.observation import DeviceKnowledge, ObservationLayout
from splitrl.envs.reward import RewardSpec
from splitrl.envs.rtt import RTTModel
from splitrl.envs.scenarios import Scenario, ScenarioParts, resolve_scenario
from splitrl.envs.server_load import ServerLoad
from splitrl.envs.time_model import (
    CostTables,
    LinkOverheads,
    RequestModel,
    RequestTiming,
    ShaperBucket,
)
from splitrl.profiles.presets import DevicePreset, NetworkPreset
from splitrl.profiles.schema import Profile

Mode = Literal["replay", "live"]

#: requests (sample index, queueing variate) drawn per numpy call
_DRAW_BLOCK = 1024
#: bound of the seeds drawn from ``np_random`` for the components' own generators
_SEED_BOUND = 2**63


class SplitComputingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Adaptive split computing with early exits on a time-varying uplink.

    ## Description
    An edge device classifies camera frames with an early-exit DNN. Frames arrive every
    ``frame_interval_s``; for each one the device chooses where the DNN stops (exit), where it is cut
    between device and edge server (split) and to how many bits the tensor crossing the uplink is
    quantized. Outcomes (payload size, correctness) are replayed exactly from a measured profile; time
    and energy come from device and server presets, a channel model of the uplink capacity, the
    round-trip time and a Markov-modulated server load.

    ## Action space
    ``MultiDiscrete([n_exits, n_splits, n_bits])``:

    | index | name  | meaning |
    |-------|-------|---------|
    | 0     | exit  | stop at exit ``e`` (the last one is the full model) |
    | 1     | split | the device runs stages ``[0, s)``; ``s = 0`` sends the input |
    | 2     | bits  | bit option of the sent tensor (``profile.bit_options``, e.g. 1..8 bits or lossless) |

    If ``s >= k_e`` (the exit lies on the device) nothing is sent and ``bits`` is irrelevant: the action
    is executed as its canonical form ``(e, k_e, 0)``. ``action_masks()`` marks canonical actions.

    ## Observation space
    ``Box`` of float32 (``ObservationLayout`` names them); only what the device knows before deciding:

    | index | name | range | meaning |
    |-------|------|-------|---------|
    | 0..H-1 | throughput_k | [-1, 1] | throughput of the device's last H transfers, newest first, ``log10(Mbit/s)/3`` (the link's nominal rate before any) |
    | H | link_quality | [-1, 1] | the link rate the radio reports now, same scaling (absent with ``link_quality=False``) |
    | H+1 | estimate_age | [0, 1] | time since the last transfer ended, ``age/(age + 1 s)`` |
    | H+2 | last_latency | [0, 10] | latency of the last completed request, in deadlines |
    | H+3 | server_load | [0, 1] | utilization reported in the last reply from the server |
    | H+4 | backlog | [0, 10] | how long this request waited for the device, in frame intervals |

    Without link quality the last four features move to ``H..H+3``. The link-rate report is the
    capacity ``delay_s`` before the decision times a log-normal error, correlated over about a
    second, whose mean absolute relative error is 17% by default
    (:class:`~splitrl.envs.link_quality.LinkQualityModel`): what LTE's RSRP/SINR/CQI or Wi-Fi's
    RSSI/MCS tell a device without sending anything. ``knowledge.link_quality_bps`` holds it in
    bit/s (``None`` when it is not observed). The true current capacity is never observed (it is
    in ``info`` for analysis and the oracles).

    ## Time model
    ``latency = wait + device compute + encode + uplink transfer (integrated over the capacity) + RTT/2
    + server queueing + (server compute + decode) x load slowdown + RTT/2``. The device is busy until its
    transfer ends (or until its local compute ends), so the next frame may wait. Device energy is
    ``compute power x (compute + encode) + radio power x transfer + idle power x waiting for the reply``
    (:class:`~splitrl.envs.time_model.RequestModel`). With a transfer timeout, a transfer still running
    after it is given up: the device runs the rest of the model up to the action's exit itself (on the
    full-precision tensor, so the request counts the device-only accuracy of that exit), and the
    request costs ``wait + device compute + encode + timeout + the rest on the device``.

    ## Rewards
    ``correct - w_latency * latency / deadline - w_miss * [latency > deadline] - w_energy * energy / E_ref``
    (see :class:`splitrl.envs.reward.RewardSpec` and its presets).

    ## Starting state and episode end
    Each episode starts with an idle device, the channel at a random point of its realization and no
    measurement yet. Episodes never terminate; they are truncated after ``horizon`` requests: by
    default the requests of the scenario's ``episode_s`` (at least 20 s of simulated time, e.g.
    2400 requests at 120 frames/s), long enough for the link to change within an episode.

    ## Arguments
    Every argument after ``scenario`` overrides that part of the scenario; names or objects are accepted.

    * ``scenario``: a name from ``splitrl.envs.SCENARIOS`` or a :class:`Scenario` (default ``"default"``)
    * ``profile``: profile name or path, or a loaded :class:`Profile`
    * ``device``, ``server``: device preset names or :class:`DevicePreset`
    * ``network``: network preset name or :class:`NetworkPreset` (RTT, nominal rate, radio power)
    * ``channel``: channel spec (``"markov"``, ``"gilbert-elliott"``, ``"fading"``, ``"trace:PATH"``) or object
    * ``reward``: reward preset name or :class:`RewardSpec`
    * ``frame_interval_s``, ``deadline_s``: request period, latency deadline
    * ``horizon``: requests per episode (default: ``ceil(scenario.episode_s / frame_interval_s)``)
    * ``history_length``: throughput measurements in the observation
    * ``link_quality``: observe the radio's link-rate report: ``True`` (the default model), a
      :class:`~splitrl.envs.link_quality.LinkQualityModel`, or ``False`` for throughput-only
      studies (default: the scenario's ``link_quality``)
    * ``link_overheads``: what a real TCP/IP link adds to each transfer and round trip
      (:class:`~splitrl.envs.time_model.LinkOverheads`: header bytes per packet, a token-bucket
      shaper's burst, the reply's ACK, the software stack's time; default: the scenario's, which
      is none: the payload alone crosses the channel)
    * ``transfer_timeout_s``: seconds after which the device gives up a transfer and answers
      itself (default: the scenario's, which for most scenarios is none: the device waits however
      long a transfer takes; a scenario with ``transfer_timeout_s=None`` switches it off)
    * ``gate_heads``: the device also computes the head of every earlier exit whose stages an
      action runs on it, as a confidence gate at the early exits does (default ``False``: only the
      action's own exit has its head computed); measures ``mpc-geometric-gated`` net of that cost
    * ``exit_gate``: the device's confidence gate at the early exits, a threshold in ``(0, 1)``: a
      request whose action computes an earlier exit on the device stops there when its confidence
      at that exit is above it, and the heads of the exits passed are charged
      (:mod:`splitrl.envs.exit_gate`; default: the scenario's, which for most scenarios is none).
      The action is still chosen before the device computes anything; ``predict_actions`` does not
      price the gate, ``evaluate_actions`` does. Replay mode only
    * ``mode``: ``"replay"`` (profile tables) or ``"live"`` (run the real model and codec per step)

    ## Info
    ``latency_s`` and its parts (``wait_s``, ``device_compute_s``, ``encode_s``, ``transfer_s``,
    ``rtt_s``, ``queue_s``, ``server_s``), ``energy_j``, ``payload_bytes``, ``correct``, ``deadline_missed``,
    ``capacity_bps`` (true capacity at decision time), ``server_load``, ``sample_index``,
    ``canonical_action``, ``gave_up`` (the device gave up the transfer at the timeout; then
    ``device_compute_s`` includes the rest of the model on the device and ``transfer_s`` is the
    timeout), ``gate_exit`` (the early exit the ``exit_gate`` stopped the request at, ``-1`` where
    it went on or without a gate; ``canonical_action`` is then the action served, answering at
    that exit).

    ## Version history
    * v1: the ``link_quality`` observation (the radio's noisy link-rate report); episodes cover
      the scenario's ``episode_s`` of simulated time (default scenario: 20 s instead of 200
      requests). Policies trained on v0 observe a different vector and do not run on v1.
    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 10}  # noqa: RUF012 (Gymnasium's convention)

    def __init__(
        self,
        scenario: str | Scenario = "default",
        *,
        profile: str | Profile | None = None,
        device: str | DevicePreset | None = None,
        server: str | DevicePreset | None = None,
        network: str | NetworkPreset | None = None,
        channel: str | dict[str, Any] | Channel | None = None,
        reward: str | RewardSpec | None = None,
        frame_interval_s: float | None = None,
        deadline_s: float | None = None,
        horizon: int | None = None,
        history_length: int = 4,
        link_quality: bool | LinkQualityModel | None = None,
        link_overheads: LinkOverheads | None = None,
        transfer_timeout_s: float | None = None,
        gate_heads: bool = False,
        exit_gate: float | None = None,
        mode: Mode = "replay",
        render_mode: str | None = None,
    ) -> None:
        parts = resolve_scenario(
            scenario,
            profile=profile,
            device=device,
            server=server,
            network=network,
            channel=channel,
            reward=reward,
            frame_interval_s=frame_interval_s,
            deadline_s=deadline_s,
            horizon=horizon,
            link_overheads=link_overheads,
            transfer_timeout_s=transfer_timeout_s,
            exit_gate=exit_gate,
        )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        if mode not in ("replay", "live"):
            raise ValueError(f"mode must be 'replay' or 'live', got {mode!r}")
        if history_length < 1:
            raise ValueError(f"history_length must be at least 1, got {history_length}")
        if not isinstance(gate_heads, bool):
            raise ValueError(f"gate_heads must be True or False, got {gate_heads!r}")
        if parts.exit_gate is not None and mode == "live":
            raise ValueError(
                "exit_gate needs the profile's measured confidences: use mode='replay' "
                "(the live model does not report its exits' confidences)"
            )
        self.parts: ScenarioParts = parts
        self.profile: Profile = parts.profile
        self.reward_spec: RewardSpec = parts.reward
        self.channel: Channel = parts.channel
        self.server_load: ServerLoad = parts.server_load
        self.rtt: RTTModel = parts.rtt
        self.frame_interval_s = parts.frame_interval_s
        self.horizon = parts.horizon
        self.mode: Mode = mode
        self.render_mode = render_mode

        if link_quality is None:
            link_quality = parts.link_quality
        if isinstance(link_quality, LinkQualityModel):
            self.link_quality_model: LinkQualityModel | None = link_quality
        elif isinstance(link_quality, bool):
            self.link_quality_model = LinkQualityModel() if link_quality else None
        else:
            raise TypeError(
                f"link_quality must be a bool or a LinkQualityModel, got {type(link_quality).__name__}"
            )

        self.actions = ActionTable.from_profile(self.profile)
        #: the confidence threshold of the device's gate at the early exits, or ``None``
        self.exit_gate: float | None = parts.exit_gate
        self.costs = CostTables.build(
            self.profile, parts.device, parts.server, gate_heads or self.exit_gate is not None
        )
        self.layout = ObservationLayout(history_length, self.link_quality_model is not None)
        self.action_space = spaces.MultiDiscrete(list(self.actions.nvec))
        self.observation_space = self.layout.space()
        self.knowledge = DeviceKnowledge(
            self.layout,
            prior_bps=parts.nominal_mbps * 1e6,
            deadline_s=self.reward_spec.deadline_s,
            frame_interval_s=self.frame_interval_s,
        )
        self._mask = self.actions.mask()
        self._exit_stages = self.profile.exit_stages
        self._canonical = np.array(self.actions.canonical_actions(), dtype=np.int64)
        self._canonical_list = self.actions.canonical_actions()
        self._canonical_index = {action: i for i, action in enumerate(self._canonical_list)}
        #: the gate's routing and conditional accuracies (``None`` without ``exit_gate``)
        self.gate: ExitGate | None = (
            None
            if self.exit_gate is None
            else ExitGate(self.profile, self.actions, self._canonical, self.exit_gate)
        )
        self.request_model = RequestModel(
            self.costs,
            self._exit_stages,
            self._canonical,
            parts.device,
            parts.network,
            parts.server_job_s,
            parts.link_overheads,
            parts.transfer_timeout_s,
        )
        # Per-sample tables as Python-friendly arrays: indexing a numpy scalar per step is the hot path.
        self._payload = self.profile.payload_bytes
        self._correct = self.profile.correct
        self._expected = self.profile.accuracy()
        self._mean_payload = np.rint(self.profile.mean_payload_bytes()).astype(np.int64)
        self._mean_rtt_s = self.rtt.mean_s
        payload, accuracy = self._expected_outcomes()
        e, _, _ = self._canonical.T
        exit_stages = np.asarray(self._exit_stages)
        #: the device's prediction of every canonical action (:meth:`predict_actions`)
        self.forecast = ActionForecast(
            self.request_model,
            self._canonical,
            payload,
            accuracy,
            self._mean_rtt_s,
            self.server_load,
            fallback_accuracy=self._expected[exit_stages[e], 0, e],
        )
        self._live: Any = None
        if mode == "live":
            from splitrl.envs.live_outcomes import LiveOutcomes

            self._live = LiveOutcomes(self.profile)
        self._requests: np.random.Generator | None = None
        # the radio's reports; reset() seeds each episode's error from np_random
        self.link_quality_report: LinkQualityReport | None = (
            None
            if self.link_quality_model is None
            else LinkQualityReport(self.link_quality_model, self.frame_interval_s)
        )
        self._step_index = 0
        self._arrival = 0.0
        self._device_free = 0.0
        # the link's shaper after the last transfer (None: full, or no shaper)
        self._bucket: ShaperBucket | None = None
        self._draw: tuple[int, float, float] = (0, 0.0, 0.0)
        self._pending_draws: list[tuple[int, float]] = []

    # ------------------------------------------------------------------ Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: an idle device, a fresh channel and load realization, no measurements."""
        super().reset(seed=seed)
        self.channel.reset(self.np_random)
        self.server_load.reset(self.np_random)
        self.rtt.reset(self.np_random)
        # Requests (which sample, RTT jitter, queueing) come from their own stream, so every policy
        # evaluated with the same seed faces the same requests whatever it does.
        self._requests = private_generator(self.np_random)
        if self.link_quality_report is not None:
            self.link_quality_report.reset(int(self.np_random.integers(_SEED_BOUND)))
        self._pending_draws = []
        self.knowledge.reset()
        self._step_index = 0
        self._arrival = 0.0
        self._device_free = 0.0
        self._bucket = None
        self._draw_request()
        return self._observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Serve the current request with ``action``; see the class docstring."""
        if self._requests is None:
            raise RuntimeError("call reset() before step()")
        e, s, b = self.actions.canonical(*self.actions.validate(action))
        e, s, b, chosen, stopped_at = self._through_gate(e, s, b)
        arrival = self._arrival
        start = arrival if arrival > self._device_free else self._device_free
        (
            n_bytes,
            correct,
            (
                device_compute_s,
                encode_s,
                transfer_s,
                rtt_s,
                queue_s,
                server_s,
                load_at_server,
                device_free,
                done,
                energy_j,
                self._bucket,
                gave_up,
            ),
        ) = self._serve(e, s, b, start, chosen, stopped_at)
        latency_s = done - arrival
        reward = self.reward_spec(correct, latency_s, energy_j)
        info = {
            "latency_s": latency_s,
            "wait_s": start - arrival,
            "device_compute_s": device_compute_s,
            "encode_s": encode_s,
            "transfer_s": transfer_s,
            "rtt_s": rtt_s,
            "queue_s": queue_s,
            "server_s": server_s,
            "energy_j": energy_j,
            "payload_bytes": n_bytes,
            "correct": correct,
            "deadline_missed": latency_s > self.reward_spec.deadline_s,
            "capacity_bps": self.channel.capacity(start),
            "server_load": load_at_server,
            "sample_index": self._draw[0],
            "canonical_action": np.array((e, s, b), dtype=np.int64),
            "gave_up": gave_up,
            "gate_exit": stopped_at,
        }
        self._device_free = device_free
        offloaded = not self.actions.is_device_only(e, s)
        if gave_up:
            # what the device measured of the transfer it gave up: the bytes that got through
            tx_start = start + device_compute_s - self.request_model.fallback_s(e, s) + encode_s
            sent = self.request_model.bytes_sent(self.channel, n_bytes, tx_start, transfer_s)
            self.knowledge.record_transfer(sent, transfer_s, tx_start + transfer_s)
        elif offloaded:
            self.knowledge.record_transfer(n_bytes, transfer_s, device_free)
        self.knowledge.record_completion(
            arrival + latency_s, latency_s, load_at_server if offloaded and not gave_up else None
        )
        self._step_index += 1
        self._arrival = self._step_index * self.frame_interval_s
        self._draw_request()
        truncated = self._step_index >= self.horizon
        return self._observe(), float(reward), False, truncated, info

    def action_masks(self) -> np.ndarray:
        """Boolean mask over the flattened actions (C order over ``(exit, split, bits)``): canonical actions."""
        return self._mask.copy()

    def render(self) -> str | None:
        """``"ansi"``: one line with the time, the device's view and the true capacity."""
        if self.render_mode != "ansi":
            return None
        return (
            f"t={self._arrival:8.3f}s request={self._step_index} "
            f"estimate={self.knowledge.throughput_estimate_bps / 1e6:7.2f} Mbit/s "
            + (
                ""
                if self.knowledge.link_quality_bps is None
                else f"link={self.knowledge.link_quality_bps / 1e6:7.2f} Mbit/s "
            )
            + f"capacity={self.channel.capacity(self._arrival) / 1e6:7.2f} Mbit/s "
            f"backlog={max(self._device_free - self._arrival, 0.0) * 1e3:7.1f} ms"
        )

    # ------------------------------------------------------------------ all actions at once
    @property
    def server_job_s(self) -> float:
        """The server's mean service time of one job at no load (the queueing model's unit)."""
        return self.parts.server_job_s

    @property
    def request_start_s(self) -> float:
        """When the current request starts: its arrival, or later if the device is still busy."""
        return max(self._arrival, self._device_free)

    def request_exit_confidences(self) -> np.ndarray:
        """This request's softmax confidence at every exit, from the device's own tensor.

        What the device learns only by computing up to each exit: the profile measured it for
        every sample. No causal policy reads it; ``mpc-geometric-gated`` does, to measure what a
        confidence gate at the early exits would be worth.

        :return: ``[n_exits]`` confidences in ``[0, 1]``
        """
        if self._requests is None:
            raise RuntimeError("call reset() before reading the request")
        sample = self._draw[0]
        # at split k_e no stage of exit e runs on the server: the profile holds its clean value
        return np.array(
            [
                float(self.profile.confidence[sample, k_e, 0, e])
                for e, k_e in enumerate(self._exit_stages)
            ]
        )

    def evaluate_actions(
        self,
        capacity_bps: float | None = None,
        know_labels: bool = False,
        draws: Literal["exact", "mean"] = "exact",
    ) -> ActionOutcomes:
        """The outcome of every canonical action for the current request, without taking a step.

        This knows what no device can: the channel over the actual transfer, this request's payload
        sizes, its RTT draw, the true server load when it arrives and its queueing draw. The
        clairvoyant baselines use it. Correctness is the profile's accuracy of each action unless
        ``know_labels``: an oracle that knew which exit answers this very sample correctly would
        measure luck with labels, not the value of knowing the channel.

        :param capacity_bps: ``None`` integrates transfers over the true channel; a number assumes
            that constant capacity instead (everything else stays exact)
        :param know_labels: use this sample's own correctness (and the reward's correctness rule)
        :param draws: ``"exact"``: this request's RTT and queueing draws; ``"mean"``: the RTT
            model's mean and the mean queueing delay instead (what the lookahead of the
            clairvoyant references forecasts for the next requests, whose draws are still unknown)
        """
        if self._requests is None:
            raise RuntimeError("call reset() before evaluating actions")
        if draws not in ("exact", "mean"):
            raise ValueError(f"draws must be 'exact' or 'mean', got {draws!r}")
        if capacity_bps is not None and not capacity_bps > 0.0:
            raise ValueError(f"capacity_bps must be a positive bit rate, got {capacity_bps!r}")
        arrival = self._arrival
        sample, rtt_s, drawn_u = self._draw
        queue_u: float | None = drawn_u
        if draws == "mean":
            rtt_s, queue_u = self.rtt.mean_s, None
        sizes, correct = self._action_outcomes(sample, know_labels)
        device_free, done, energy_j, gave_up = self.request_model.serve_actions(
            self.request_start_s,
            sizes,
            rtt_s,
            queue_u,
            self.server_load,
            self.channel,
            capacity_bps,
            self._bucket,
        )
        if gave_up.any():
            # a given-up transfer: the device answered at the action's exit from its own tensor
            exits = self._canonical[:, 0]
            answered = {
                e: self._answered_on_device(sample, e, know_labels)
                for e in set(exits[gave_up].tolist())
            }
            correct = np.where(gave_up, [answered.get(e, 0.0) for e in exits.tolist()], correct)
        if self.gate is not None:
            # every action as the gate serves it: the confident requests stop at an early exit
            served, stopped_at = self.gate.route_all(sample)
            sizes, device_free, done = sizes[served], device_free[served], done[served]
            energy_j, gave_up, correct = energy_j[served], gave_up[served], correct[served]
            if not self._counts_labels(know_labels):
                correct = np.where(
                    gave_up,
                    self.gate.go_fallback_accuracy,
                    self.gate.expected_correct_all(stopped_at),
                )
        latency_s = done - arrival
        return ActionOutcomes(
            actions=self._canonical.copy(),
            reward=self.reward_spec.rewards(correct, latency_s, energy_j),
            latency_s=latency_s,
            energy_j=energy_j,
            payload_bytes=sizes,
            correct=correct,
            device_free_s=device_free - arrival,
            wait_s=self.request_start_s - arrival,
            gave_up=gave_up,
        )

    @overload
    def evaluate_action_from(self, action: np.ndarray, start_s: float) -> tuple[float, float]: ...

    @overload
    def evaluate_action_from(
        self, action: np.ndarray, start_s: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def evaluate_action_from(
        self, action: np.ndarray, start_s: float | np.ndarray
    ) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
        """The current request served with ``action`` as if the device were free at ``start_s``.

        What a backlog costs in hindsight: the same request, on the same channel and draws, started
        earlier or later than it will be. No state changes; like :meth:`evaluate_actions` it knows
        what no device can, and correctness is the profile's accuracy of the action (of its exit
        on the device, where the device gives up the transfer).

        :param action: an action, validated and made canonical as :meth:`step` does
        :param start_s: when the device could start it, or an array of such times (numpy over
            them: :meth:`RequestModel.serve_from`); the request never starts before it arrives
        :return: the reward, and when the device is free again (seconds, episode time): floats,
            or arrays like ``start_s``
        """
        if self._requests is None:
            raise RuntimeError("call reset() before evaluating an action")
        e, s, b = self.actions.canonical(*self.actions.validate(action))
        e, s, b, chosen, stopped_at = self._through_gate(e, s, b)
        starts = np.maximum(self._arrival, np.asarray(start_s, dtype=float))
        sample, rtt_s, queue_u = self._draw
        n_bytes, correct = self._outcome(sample, e, s, b, False, chosen, stopped_at)
        device_free, done, energy_j, gave_up = self.request_model.serve_from(
            e,
            s,
            b,
            starts.reshape(-1),
            n_bytes,
            rtt_s,
            queue_u,
            self.server_load,
            self.channel,
            self._bucket,
        )
        if gave_up.any():
            answered = self._answered_on_device(sample, e, False, chosen)
            correct_each = np.where(gave_up, answered, correct)
        else:
            correct_each = np.full(gave_up.shape, correct)
        rewards = self.reward_spec.rewards(correct_each, done - self._arrival, energy_j)
        if np.ndim(start_s) == 0:
            return float(rewards[0]), float(device_free[0])
        return rewards.reshape(starts.shape), device_free.reshape(starts.shape)

    def predict_actions(self, capacity_bps: float | None = None) -> ActionOutcomes:
        """What the device can predict for every canonical action before it decides.

        Uses only device knowledge: the profile's accuracy and mean payload of each action, the mean
        RTT, the server load reported in the last reply (with the server's mean queueing delay at
        that load), its own backlog, and a constant uplink capacity. It never reads the channel, the
        server's true load or this request's draws. The same time model as :meth:`step`, computed
        for all actions at once (numpy over actions).

        :param capacity_bps: the capacity to assume; default: the device's latest throughput
            measurement (``knowledge.throughput_estimate_bps``)
        """
        if self._requests is None:
            raise RuntimeError("call reset() before predicting actions")
        capacity = self.knowledge.throughput_estimate_bps if capacity_bps is None else capacity_bps
        return self.forecast.predict(
            self._arrival,
            self.request_start_s,
            capacity,
            self.knowledge.server_load,
            self.reward_spec,
            self._bucket,
        )

    def _expected_outcomes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per canonical action: the profile's mean payload (0 when device-only) and accuracy."""
        e, s, b = self._canonical.T
        device_only = s >= np.asarray(self._exit_stages)[e]
        return np.where(device_only, 0, self._mean_payload[s, b]), self._expected[s, b, e]

    # ------------------------------------------------------------------ internals
    def _draw_request(self) -> None:
        if not self._pending_draws:
            # Drawn in blocks: one numpy call per 1024 requests instead of two per request.
            assert self._requests is not None
            samples = self._requests.integers(self.profile.n_samples, size=_DRAW_BLOCK).tolist()
            uniforms = self._requests.random(_DRAW_BLOCK).tolist()
            self._pending_draws = list(zip(samples, uniforms, strict=True))
            self._pending_draws.reverse()
        sample, queue_u = self._pending_draws.pop()
        self._draw = (sample, self.rtt.sample(), queue_u)

    def _observe(self) -> np.ndarray:
        start = max(self._arrival, self._device_free)
        link_quality = (
            None
            if self.link_quality_report is None
            else self.link_quality_report.report(self.channel.capacity, start)
        )
        return self.knowledge.observe(start, start - self._arrival, link_quality)

    def _serve(
        self, e: int, s: int, b: int, start: float, chosen: int, stopped_at: int
    ) -> tuple[int, float, RequestTiming]:
        """Serve the current request, started at ``start``, with canonical action ``(e, s, b)`` on
        the true channel and this request's draws (no state change); ``chosen`` and
        ``stopped_at`` as :meth:`_through_gate` gives them.

        :return: the payload's size, the correctness as the reward counts it (of the exit on the
            device when the device gave up the transfer) and the request's timing
        """
        sample, rtt_s, queue_u = self._draw
        n_bytes, correct = self._outcome(sample, e, s, b, True, chosen, stopped_at)
        timing = self.request_model.serve(
            e, s, b, start, n_bytes, rtt_s, queue_u, self.server_load, self.channel, None,
            self._bucket,
        )  # fmt: skip
        if timing[-1]:
            # the device gave up the transfer and answered at exit e from its own tensor
            correct = self._answered_on_device(sample, e, True, chosen)
        return n_bytes, correct, timing

    def _through_gate(self, e: int, s: int, b: int) -> tuple[int, int, int, int, int]:
        """The canonical action ``(e, s, b)`` as the exit gate serves the current request: the
        served action, the chosen action's canonical index and the exit it stopped at
        (:data:`~splitrl.envs.exit_gate.NOT_STOPPED` where it went on, or without a gate)."""
        if self.gate is None:
            return e, s, b, -1, NOT_STOPPED
        chosen = self._canonical_index[(e, s, b)]
        served, stopped_at = self.gate.route(self._draw[0], chosen)
        return (*self._canonical_list[served], chosen, stopped_at)

    def _counts_labels(self, know_labels: bool) -> bool:
        """Whether the correctness is the sample's own (else the profile's accuracy)."""
        return know_labels and self.reward_spec.correctness == "sample"

    def _action_outcomes(self, sample: int, know_labels: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_outcome` of every canonical action: the payloads' sizes and the correctness as
        the reward counts it (new arrays)."""
        if self._live is not None:
            outcomes = [
                self._outcome(sample, *action, know_labels) for action in self._canonical_list
            ]
            sizes, correct = (np.array(column) for column in zip(*outcomes, strict=True))
            return sizes.astype(np.int64), correct.astype(float)
        e, s, b = self._canonical.T
        sizes = np.where(s >= np.asarray(self._exit_stages)[e], 0, self._payload[sample, s, b])
        if know_labels and self.reward_spec.correctness == "sample":
            return sizes.astype(np.int64), self._correct[sample, s, b, e].astype(float)
        return sizes.astype(np.int64), self._expected[s, b, e].astype(float)

    def _answered_on_device(
        self, sample: int, e: int, know_labels: bool, chosen: int = -1
    ) -> float:
        """The correctness as the reward counts it of ``sample`` answered at exit ``e`` on the
        device: what a request whose transfer the device gave up gets (with a gate, of the
        requests the gate let go on under the chosen action, index ``chosen``)."""
        if self.gate is not None and chosen >= 0 and not self._counts_labels(know_labels):
            return float(self.gate.go_fallback_accuracy[chosen])
        return self._outcome(sample, e, self._exit_stages[e], 0, know_labels)[1]

    def _outcome(
        self,
        sample: int,
        e: int,
        s: int,
        b: int,
        know_labels: bool,
        chosen: int = -1,
        stopped_at: int = NOT_STOPPED,
    ) -> tuple[int, float]:
        """The payload's size and the correctness as the reward counts it of ``sample`` served
        with the canonical action ``(e, s, b)`` (with a gate, chosen as the action of index
        ``chosen``, stopped at ``stopped_at``: the profile's accuracy given what the gate saw)."""
        if self._live is not None:
            n_bytes, correct = self._live.outcome(sample, e, s, b)
            if not know_labels:
                correct = float(self._expected[s, b, e])
            return n_bytes, correct
        n_bytes = 0 if s >= self._exit_stages[e] else int(self._payload[sample, s, b])
        if self._counts_labels(know_labels):
            return n_bytes, float(self._correct[sample, s, b, e])
        if self.gate is not None and chosen >= 0:
            return n_bytes, self.gate.expected_correct(chosen, stopped_at)
        return n_bytes, float(self._expected[s, b, e])
