"""Every action's mean times in a resolved scenario, and whether the device keeps up with its frames.

The env's own :class:`~splitrl.envs.time_model.RequestModel` times every canonical action at mean
payloads, an unloaded server and the mean round trip: :func:`resolve_scenario
<splitrl.envs.scenarios.resolve_scenario>` warns with :func:`keep_up_warning` when the device
cannot keep up with the frame rate whatever it does, and ``splitrl scenario fit``
(:mod:`splitrl.evaluation.scenario_fit`) proposes a frame rate and a deadline from these times.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from splitrl.envs.actions import ActionTable
from splitrl.envs.time_model import CostTables, RequestModel

if TYPE_CHECKING:
    from splitrl.envs.scenarios import ScenarioParts


def action_times(parts: ScenarioParts, capacity_bps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per canonical action: the device's busy time and the latency (seconds).

    Mean payloads, an unloaded server and the mean round trip, at a constant ``capacity_bps``
    (with the scenario's transfer timeout: a transfer that outlasts it is given up);
    the env's own :class:`~splitrl.envs.time_model.RequestModel` does the arithmetic.

    :param parts: the resolved scenario
    :param capacity_bps: the uplink capacity
    """
    profile = parts.profile
    canonical = np.array(ActionTable.from_profile(profile).canonical_actions(), dtype=np.int64)
    model = RequestModel(
        CostTables.build(profile, parts.device, parts.server),
        profile.exit_stages,
        canonical,
        parts.device,
        parts.network,
        parts.server_job_s,
        transfer_timeout_s=parts.transfer_timeout_s,
    )
    e, s, b = canonical.T
    device_only = s >= np.asarray(profile.exit_stages)[e]
    payload = np.where(device_only, 0.0, profile.mean_payload_bytes()[s, b])
    busy, done, *_ = model.predict(
        0.0, payload, capacity_bps, 0.0, parts.rtt.mean_s, parts.server_load
    )
    return busy, done


def keep_up_warning(parts: ScenarioParts) -> str | None:
    """A warning when the device is slower than the frame rate even at its cheapest action.

    :param parts: the resolved scenario
    :return: the warning, or ``None`` when the device keeps up
    """
    busy, _ = action_times(parts, parts.uplink_mbps[1] * 1e6)
    cheapest = float(busy.min())
    if cheapest <= parts.frame_interval_s:
        return None
    return (
        f"device {parts.device.name} is busy {1e3 * cheapest:.1f} ms per request even at its "
        f"cheapest action, longer than the {1e3 * parts.frame_interval_s:.1f} ms frame interval: "
        "the backlog grows whatever the policy does (splitrl scenario fit proposes a frame rate)"
    )
