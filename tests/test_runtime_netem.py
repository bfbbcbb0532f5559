"""The namespace pair with tc shaping (skipped where namespaces or tc are unavailable)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from splitrl.envs.traces import Trace
from splitrl.runtime.netem import ShapedLink, shaping_unavailable

REASON = shaping_unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no tc shaping here: {REASON}")

SINK = """
import socket, sys, time
server = socket.create_server((sys.argv[1], 5801))
print("ready", flush=True)
conn, _ = server.accept()
first = None
total = 0
while chunk := conn.recv(65536):
    first = first or time.perf_counter()
    total += len(chunk)
print(total, time.perf_counter() - first, flush=True)
"""

SOURCE = """
import socket, sys
with socket.create_connection((sys.argv[1], 5801), timeout=10) as sock:
    sock.sendall(bytes(int(sys.argv[2])))
"""


def test_transfer_between_namespaces_follows_the_shaped_rate() -> None:
    rate_bps, n_bytes = 2e6, 100_000
    with ShapedLink(Trace.from_rates([rate_bps], slot_s=10.0)) as link:
        sink = subprocess.Popen(
            link.command("server", [sys.executable, "-c", SINK, link.server_address]),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
            source = [sys.executable, "-c", SOURCE, link.server_address, str(n_bytes)]
            subprocess.run(link.command("device", source), check=True, timeout=30)
            total, seconds = sink.stdout.readline().split()
        finally:
            sink.kill()
            sink.wait()
    assert int(total) == n_bytes
    assert 0.7 < float(seconds) / (8 * n_bytes / rate_bps) < 1.5
