"""A shaped link between two network namespaces whose rate follows a trace (Linux, root, ``tc``).

:class:`ShapedLink` creates two namespaces joined by a veth pair with private addresses
(``10.213.x.1`` on the device side, ``10.213.x.2`` on the server side) and shapes the device's
egress to the trace. A background thread moves the shaper along the trace at the trace's own
segment boundaries (:meth:`ShapedLink.start_following`), through one long-lived ``tc -batch``
process, so a change costs no process start. The shaper is two qdiscs:

* an ``htb`` class whose rate is the trace's. Not ``tbf`` alone: ``tc qdisc change ... tbf``
  refills the token bucket on every change, so a rate that moves every 100 ms lets an extra
  bucket through every 100 ms (measured: 100 kB at 200 kbit/s took 2.31 s instead of 4.04 s with
  ten changes a second); an ``htb`` class keeps its tokens across ``tc class change``;
* above it a ``tbf`` gate, open (1 Gbit/s) while the trace has capacity and closed (8 bit/s)
  where it has less than ``outage_rate_bps``: ``htb`` sends a packet whenever its bucket is not
  empty and then owes the packet's time at its rate, so an ``htb`` rate near zero would leave a
  debt of seconds after an outage. The gate holds the packets instead; the bucket it refills when
  it closes lets at most one packet through.

Generic segmentation is turned off on the device's veth (``gso_max_segs 1``), so the shaper
charges every packet as it goes on the wire (a frame of at most 1514 bytes); with 64 kB GSO
packets ``htb`` let 36% more through than its rate.

The link has no delay of its own (the kernel here has no ``netem``): :class:`ReplyDelayRelay`
adds the round trip in userspace, on the server side, by holding each reply for one draw of the
round-trip time.

Sockets are opened inside a namespace by :meth:`ShapedLink.connect` (device side) and
:meth:`ShapedLink.listen` (server side): the calling thread enters the namespace (``setns``) just
for the ``socket()`` call, so one process can hold both ends. Commands run inside a namespace
through :meth:`ShapedLink.command` (``ip netns exec NAME ...``). Everything is removed on
:meth:`ShapedLink.close`.

:func:`shaping_unavailable` says why this cannot run here (no ``tc``/``ip``, not root,
``ip netns add`` refused, no ``htb``), or returns ``None``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from splitrl.envs.traces import Trace
from splitrl.runtime.protocol import frame_message, recv_message

#: below this rate the trace is in an outage: the gate closes
OUTAGE_RATE_BPS = 8_000
#: after the gate opens, when to send a datagram that restarts the egress (tc applies the change
#: within a few milliseconds)
KICK_DELAYS_S = (0.002, 0.008)
_GATE_OPEN = "1gbit"
_GATE_CLOSED = "8bit"
#: bytes a shaper class may send at once after an idle time: one full frame (1500-byte IP
#: packet + 14-byte Ethernet header) and a little slack
DEFAULT_BURST_BYTES = 1600
#: per packet of a bulk transfer on the veth: Ethernet 14 + IPv4 20 + TCP 20 + TCP timestamps 12
WIRE_HEADER_BYTES = 66
#: TCP payload of a full packet with timestamps on a 1500-byte MTU
MSS_BYTES = 1448
_CLONE_NEWNET = 0x40000000


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
    try:
        htb = subprocess.run(
            ["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    finally:
        _ip("netns", "del", probe, check=False)
    if htb.returncode != 0:
        return f"`tc qdisc add ... htb` failed: {htb.stderr.strip()}"
    return None


@contextlib.contextmanager
def entered_namespace(name: str) -> Iterator[None]:
    """Run the calling thread in network namespace ``name`` (``ip netns``) inside the block.

    Sockets created inside keep that namespace after the block.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the own namespace failed")
    finally:
        os.close(own)


class ShapedLink:
    """Two namespaces joined by a veth pair, the device side shaped to a trace.

    :param trace: the uplink capacity over time (looped); its segments are the shaper's steps.
    :param burst_bytes: bytes the shaper sends at once after an idle time (``htb`` burst).
    :param outage_rate_bps: where the trace has less, the gate closes (an outage).
    :param subnet: third byte of the ``10.213.x.0/30`` subnet of the pair.
    :raises RuntimeError: when :func:`shaping_unavailable` gives a reason.
    """

    def __init__(
        self,
        trace: Trace,
        burst_bytes: int = DEFAULT_BURST_BYTES,
        outage_rate_bps: float = OUTAGE_RATE_BPS,
        subnet: int = 1,
    ) -> None:
        if not 0 <= subnet <= 255:
            raise ValueError(f"subnet must be in 0..255, got {subnet}")
        if burst_bytes < 1514:
            raise ValueError(f"burst_bytes must hold a full 1514-byte frame, got {burst_bytes}")
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
        self.burst_bytes = burst_bytes
        self.outage_rate_bps = float(outage_rate_bps)
        #: rate changes the shaper made, ``(seconds since the epoch it was due, seconds late)``
        self.changes: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._shaper: threading.Thread | None = None
        self._tc: subprocess.Popen[str] | None = None
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
            _ip("-n", self.device_ns, "link", "set", dev, "gso_max_segs", "1")
            for ns, link, address in (
                (self.device_ns, dev, self.device_address),
                (self.server_ns, srv, self.server_address),
            ):
                _ip("-n", ns, "addr", "add", f"{address}/30", "dev", link)
                _ip("-n", ns, "link", "set", link, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            first = self.trace.rates_bps[0]
            self._run_tc(self._gate_command("add", first >= self.outage_rate_bps))
            htb = [
                "qdisc",
                "add",
                "dev",
                dev,
                "parent",
                "1:1",
                "handle",
                "2:",
                "htb",
                "default",
                "1",
            ]
            self._run_tc(htb)
            self._run_tc(self._class_command("add", max(first, self.outage_rate_bps)))
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            self.close()
            detail = getattr(error, "stderr", "") or ""
            raise RuntimeError(f"setting up the shaped link failed: {error} {detail}") from error
        except BaseException:
            self.close()
            raise

    def _class_command(self, verb: str, rate_bps: float) -> list[str]:
        rate = f"{int(rate_bps)}bit"
        burst = str(self.burst_bytes)
        return [
            *("class", verb, "dev", self._veth[0], "parent", "2:", "classid", "2:1", "htb"),
            *("rate", rate, "ceil", rate, "burst", burst, "cburst", burst, "quantum", "1514"),
        ]

    def _gate_command(self, verb: str, open_: bool) -> list[str]:
        rate = _GATE_OPEN if open_ else _GATE_CLOSED
        return [
            *("qdisc", verb, "dev", self._veth[0], "root", "handle", "1:", "tbf", "rate", rate),
            *("burst", str(self.burst_bytes), "latency", "1000ms"),
        ]

    def _run_tc(self, argv: Sequence[str]) -> None:
        subprocess.run(
            ["tc", "-n", self.device_ns, *argv],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )

    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the ``"device"`` or ``"server"`` namespace."""
        return ["ip", "netns", "exec", self._namespace(side), *argv]

    def _namespace(self, side: str) -> str:
        if side not in ("device", "server"):
            raise ValueError(f"side must be 'device' or 'server', got {side!r}")
        return self.device_ns if side == "device" else self.server_ns

    def connect(self, address: tuple[str, int], timeout_s: float = 10.0) -> socket.socket:
        """A TCP connection from the device namespace to ``address``."""
        with entered_namespace(self.device_ns):
            return socket.create_connection(address, timeout=timeout_s)

    def listen(self, side: str, host: str, port: int = 0) -> socket.socket:
        """A listening TCP socket in the ``side`` namespace."""
        with entered_namespace(self._namespace(side)):
            return socket.create_server((host, port))

    def start_following(self, epoch: float | None = None) -> None:
        """Move the rate along the trace from ``epoch`` on (``time.perf_counter``; default: now).

        Each change is made when the trace's segment starts (the trace loops); how late each
        change was is kept in :attr:`changes`.
        """
        if self._shaper is not None:
            raise RuntimeError("the shaper is already following the trace")
        start = time.perf_counter() if epoch is None else epoch
        self._tc = subprocess.Popen(
            ["tc", "-n", self.device_ns, "-force", "-batch", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._shaper = threading.Thread(target=self._follow, args=(start,), daemon=True)
        self._shaper.start()

    def _follow(self, epoch: float) -> None:
        assert self._tc is not None and self._tc.stdin is not None
        with entered_namespace(self.device_ns):
            kicker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with kicker:
            self._follow_with(epoch, kicker)

    def _follow_with(self, epoch: float, kicker: socket.socket) -> None:
        assert self._tc is not None and self._tc.stdin is not None
        boundaries, rates = self.trace.boundaries_s, self.trace.rates_bps
        is_open = rates[0] >= self.outage_rate_bps
        rate = max(rates[0], self.outage_rate_bps)
        offset = 0.0
        while True:
            for k in range(len(rates)):
                commands = []
                opens = rates[k] >= self.outage_rate_bps
                if opens != is_open:
                    commands.append(self._gate_command("change", opens))
                if opens and rates[k] != rate:
                    commands.append(self._class_command("change", rates[k]))
                if not commands:
                    continue
                due = offset + boundaries[k]
                if self._stop.wait(max(due - (time.perf_counter() - epoch), 0.0)):
                    return
                self._tc.stdin.write("".join(" ".join(c) + "\n" for c in commands))
                self._tc.stdin.flush()
                self.changes.append((due, time.perf_counter() - epoch - due))
                if opens and not is_open:
                    self._kick(kicker)
                is_open = opens
                rate = rates[k] if opens else rate
            offset += self.trace.duration_s

    def _kick(self, kicker: socket.socket) -> None:
        """Restart the device's egress after the gate opened.

        While closed, the gate set its watchdog to when its bucket would hold the next packet at
        8 bit/s, minutes away, and ``tc qdisc change`` does not reset it: the queue would stay
        held until the next packet is queued (a TCP retransmission, seconds later after a long
        outage). One small datagram, queued once ``tc`` has applied the change, restarts it.
        """
        for delay_s in KICK_DELAYS_S:
            if self._stop.wait(delay_s):
                return
            with contextlib.suppress(OSError):
                kicker.sendto(b"\0", (self.server_address, 9))

    def close(self) -> None:
        """Stop the shaper and delete both namespaces (which removes the veth pair and qdiscs,
        and the pair itself should the setup have failed before moving it into them)."""
        self._stop.set()
        if self._shaper is not None:
            self._shaper.join(timeout=5.0)
        if self._tc is not None:
            with contextlib.suppress(OSError):
                assert self._tc.stdin is not None
                self._tc.stdin.close()
            try:
                self._tc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._tc.kill()
                self._tc.wait()
            self._tc = None
        if self._created:
            for ns in (self.device_ns, self.server_ns):
                _ip("netns", "del", ns, check=False)
            if self._veth[0] in _ip("link", "show", check=False).stdout:
                _ip("link", "del", self._veth[0], check=False)
            self._created = False

    def __enter__(self) -> ShapedLink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ReplyDelayRelay:
    """A TCP relay that holds every reply for one round-trip time: the RTT the link lacks.

    The relay listens on ``listener`` (e.g. :meth:`ShapedLink.listen` on the server side) and
    forwards each connection to ``upstream``. Requests pass at once, so the uplink transfer stays
    the shaped one; each reply (one length-prefixed message) leaves ``rtt_s()`` seconds after it
    came from the server. The whole round trip on the reply path gives the same end-to-end
    latency as half on each way for a request that fits the sender's window, and keeps the
    TCP acknowledgements of the uplink (the ACK clock) undelayed; the relay acknowledges every
    request segment at once (``TCP_QUICKACK``).

    :param listener: a listening socket.
    :param upstream: opens a connection to the server.
    :param rtt_s: one draw of the round-trip time per reply, in reply order.
    """

    def __init__(
        self,
        listener: socket.socket,
        upstream: Callable[[], socket.socket],
        rtt_s: Callable[[], float],
    ) -> None:
        self.listener = listener
        self.upstream = upstream
        self.rtt_s = rtt_s
        self.port = int(listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self.listener.accept()
            except OSError:
                return
            server = self.upstream()
            for sock in (device, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [device, server]
            for target, args in (
                (self._forward, (device, server)),
                (self._delay, (server, device)),
            ):
                thread = threading.Thread(target=target, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _forward(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            # Acknowledge at once: a delayed ACK (up to 40 ms, waiting to ride on the reply)
            # would keep the device's send queue, hence its idea of the transfer, open.
            source.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            while chunk := source.recv(65536):
                source.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _delay(self, source: socket.socket, sink: socket.socket) -> None:
        # Replies are timed as they come from the server and sent by a second thread, so
        # replies that come in a burst each wait their own round trip, not the sum of them.
        due: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        sender = threading.Thread(target=self._send_when_due, args=(due, sink), daemon=True)
        sender.start()
        with contextlib.suppress(OSError, ConnectionError, ValueError):
            while True:
                body = recv_message(source)
                due.put((time.perf_counter() + self.rtt_s(), body))
        due.put(None)
        sender.join()

    @staticmethod
    def _send_when_due(due: queue.Queue[tuple[float, bytes] | None], sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while (item := due.get()) is not None:
                when, body = item
                delay = when - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sink.sendall(frame_message(body))
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)  # the server went away: so does the device's link

    def close(self) -> None:
        """Stop relaying and close every socket."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._accepter.join(timeout=5.0)
        for thread in self._threads:
            thread.join(timeout=5.0)

    def __enter__(self) -> ReplyDelayRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
