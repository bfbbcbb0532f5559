"""A shaped link between two network namespaces whose rate follows a trace (Linux, root, ``tc``).

:class:`ShapedLink` creates two namespaces joined by a veth pair with private addresses
(``10.213.x.1`` on the device side, ``10.213.x.2`` on the server side), and a token-bucket filter
(``tc qdisc ... tbf``) on the device's egress whose rate a background thread moves along the trace
every ``update_s`` seconds. Commands run inside a namespace through :meth:`ShapedLink.command`
(``ip netns exec NAME ...``). Everything is removed on :meth:`ShapedLink.close`.

:func:`shaping_unavailable` says why this cannot run here (no ``tc``/``ip``, not root, or
``ip netns add`` refused), or returns ``None``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence

import numpy as np

from splitrl.envs.channels.trace_replay import TraceChannel
from splitrl.envs.traces import Trace

#: smallest rate given to tc (tbf refuses 0)
MIN_RATE_BPS = 8_000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def shaping_unavailable() -> str | None:
    """Why namespaces with tc shaping cannot be used here, or ``None`` when they can."""
    for tool in ("tc", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"splitrl-probe-{uuid.uuid4().hex[:6]}"
    try:
        result = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`ip netns add` failed: {error}"
    if result.returncode != 0:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class ShapedLink:
    """Two namespaces joined by a veth pair, the device side shaped to a trace.

    :param trace: the uplink capacity over time (looped).
    :param update_s: how often the tbf rate is moved along the trace.
    :param burst_bytes: tbf bucket size.
    :param latency_ms: how long tbf may queue a packet before dropping it.
    :param subnet: third byte of the ``10.213.x.0/30`` subnet of the pair.
    :raises RuntimeError: when :func:`shaping_unavailable` gives a reason.
    """

    def __init__(
        self,
        trace: Trace,
        update_s: float = 0.05,
        burst_bytes: int = 4096,
        latency_ms: float = 400.0,
        subnet: int = 1,
    ) -> None:
        reason = shaping_unavailable()
        if reason is not None:
            raise RuntimeError(f"cannot shape a link here: {reason}")
        tag = uuid.uuid4().hex[:6]
        self.device_ns = f"splitrl-dev-{tag}"
        self.server_ns = f"splitrl-srv-{tag}"
        self.device_address = f"10.213.{subnet}.1"
        self.server_address = f"10.213.{subnet}.2"
        self._veth = (f"sdev{tag}", f"ssrv{tag}")
        self.trace = trace
        self.update_s = update_s
        self.burst_bytes = burst_bytes
        self.latency_ms = latency_ms
        self._stop = threading.Event()
        self._shaper: threading.Thread | None = None
        self._created = False
        self._setup()

    def _setup(self) -> None:
        dev, srv = self._veth
        self._created = True
        try:
            _ip("netns", "add", self.device_ns)
            _ip("netns", "add", self.server_ns)
            _ip("link", "add", dev, "type", "veth", "peer", "name", srv)
            _ip("link", "set", dev, "netns", self.device_ns)
            _ip("link", "set", srv, "netns", self.server_ns)
            for ns, link, address in (
                (self.device_ns, dev, self.device_address),
                (self.server_ns, srv, self.server_address),
            ):
                _ip("-n", ns, "addr", "add", f"{address}/30", "dev", link)
                _ip("-n", ns, "link", "set", link, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            self._tc("add", self.trace.rates_bps[0])
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            self.close()
            detail = getattr(error, "stderr", "") or ""
            raise RuntimeError(f"setting up the shaped link failed: {error} {detail}") from error

    def _tc(self, verb: str, rate_bps: float) -> None:
        rate = max(int(rate_bps), MIN_RATE_BPS)
        qdisc = ["tc", "qdisc", verb, "dev", self._veth[0], "root", "tbf", "rate", f"{rate}bit"]
        limits = ["burst", str(self.burst_bytes), "latency", f"{self.latency_ms}ms"]
        subprocess.run(
            self.command("device", [*qdisc, *limits]),
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )

    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the ``"device"`` or ``"server"`` namespace."""
        if side not in ("device", "server"):
            raise ValueError(f"side must be 'device' or 'server', got {side!r}")
        ns = self.device_ns if side == "device" else self.server_ns
        return ["ip", "netns", "exec", ns, *argv]

    def start_following(self) -> None:
        """Start moving the rate along the trace from now on (a background thread)."""
        channel = TraceChannel(self.trace, random_start=False)
        channel.reset(np.random.default_rng(0))
        epoch = time.monotonic()

        def follow() -> None:
            last = -1.0
            while not self._stop.wait(self.update_s):
                rate = channel.capacity(time.monotonic() - epoch)
                if rate != last:
                    self._tc("change", rate)
                    last = rate

        self._shaper = threading.Thread(target=follow, daemon=True)
        self._shaper.start()

    def close(self) -> None:
        """Stop the shaper and delete both namespaces (which removes the veth pair)."""
        self._stop.set()
        if self._shaper is not None:
            self._shaper.join(timeout=5.0)
        if self._created:
            for ns in (self.device_ns, self.server_ns):
                _ip("netns", "del", ns, check=False)
            self._created = False

    def __enter__(self) -> ShapedLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
