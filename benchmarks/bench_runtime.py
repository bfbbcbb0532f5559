"""Runtime benchmark: policy decision latency, a loopback load test and a flood of forged frames.

Run: ``.venv/bin/python -m benchmarks.bench_runtime``; writes ``results/bench_runtime.json``.
How well the time model predicts real requests is ``benchmarks.bench_fidelity``.

* **decision**: median and p99 time of one decision (observation from ``DeviceKnowledge`` plus
  ``policy.onnx`` in onnxruntime, one thread) for a SACD actor of the default size (256x256) over
  the default network's action table. Goal: median <= 100 us.
* **decision_predicted_values**: the same for the shipped ``sacd-hindsight-mpc-default`` policy, whose
  device runtime also computes robust-mpc's predicted value of every action
  (``DeviceActionValues``) before the policy runs; with the policy's own time on the same
  observations, in the same process, and their ratio.
* **load**: 8 device runtimes x 200 requests, concurrently, against one server over loopback
  (EarlyExitNet architecture with untrained weights: the timing does not depend on them); every
  request must be answered.
* **flood**: a normal client's round-trip latency (sequential requests) with the server idle and
  while four attacker processes keep it busy with forged amplifying frames (54 bytes that declare
  2^26 elements, which the server must refuse from the header). Goal: p99 under the flood within
  2x of the idle p99.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from benchmarks.common import write_results
from splitrl.envs.actions import ActionTable
from splitrl.envs.link_quality import LinkQualityModel, LinkQualityReport
from splitrl.envs.observation import DeviceKnowledge, ObservationLayout
from splitrl.runtime.device import (
    DeviceRuntime,
    RequestRecord,
    ServerConnection,
)
from splitrl.runtime.exported_policy import OnnxPolicy
from splitrl.runtime.protocol import Reply, Request, frame_message, recv_message
from splitrl.runtime.segments import OnnxSegments
from splitrl.runtime.server import ServerSettings, ServerThread

DEFAULT_ACTIONS = ActionTable((2, 4, 5), 6, (1, 2, 3, 4, 6, 8, "lossless"))
LAYOUT = ObservationLayout(4)


class _SpacesEnv(gym.Env[np.ndarray, np.ndarray]):
    """Only the spaces and masks of the split-computing env, to build a SACD of the right size."""

    def __init__(self, actions: ActionTable) -> None:
        self.observation_space = LAYOUT.space()
        self.action_space = gym.spaces.MultiDiscrete(list(actions.nvec))
        self._mask = actions.mask()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return np.zeros(len(LAYOUT.names), np.float32), {}

    def step(self, action: np.ndarray) -> Any:
        return np.zeros(len(LAYOUT.names), np.float32), 0.0, False, False, {}

    def action_masks(self) -> np.ndarray:
        return self._mask.copy()


def bench_decision(directory: Path, n_calls: int = 5000) -> dict[str, float]:
    """Time observation + ONNX policy per decision."""
    from splitrl.agents.sacd import SACD
    from splitrl.runtime.onnx_export import export_policy

    agent = SACD("MlpPolicy", _SpacesEnv(DEFAULT_ACTIONS), seed=0, device="cpu")
    export_policy(
        agent,
        directory,
        actions=DEFAULT_ACTIONS,
        layout=LAYOUT,
        prior_bps=2.4e6,
        deadline_s=0.2,
        frame_interval_s=0.2,
        link_quality=LinkQualityModel(),
    )
    policy = OnnxPolicy(directory)
    knowledge = policy.metadata.device_knowledge()
    link_quality = LinkQualityReport(LinkQualityModel(), frame_interval_s=0.2)
    rng = np.random.default_rng(0)
    times = []
    for step in range(n_calls):
        knowledge.record_transfer(
            int(rng.integers(100, 20_000)), float(rng.uniform(1e-3, 0.1)), step
        )
        start = time.perf_counter_ns()
        now = step + 0.5
        policy(knowledge.observe(now, 0.0, link_quality.report(lambda _: 2.4e6, now)))
        times.append(time.perf_counter_ns() - start)
    times_us = np.array(times[100:]) / 1e3
    return {
        "median_us": float(np.median(times_us)),
        "p99_us": float(np.percentile(times_us, 99)),
        "calls": n_calls - 100,
        "goal_median_us": 100.0,
    }


def bench_decision_predicted_values(directory: Path, n_calls: int = 2000) -> dict[str, float]:
    """Time observation + predicted values + ONNX policy per decision, for the shipped
    ``sacd-hindsight-mpc-default`` policy, against the policy alone on the same observations."""
    from splitrl.pretrained import pretrained_run
    from splitrl.runtime.exported_policy import load_device_features
    from splitrl.runtime.onnx_export import export_env_policy, load_run
    from splitrl.training.run_dir import RunDirectory

    run_dir = pretrained_run("sacd-hindsight-mpc-default")
    agent, env, identity = load_run(run_dir)
    run = RunDirectory(run_dir)
    export_env_policy(
        agent,
        directory,
        env,
        identity=identity,
        scenario=run.scenario(),
        predictor=run.learner().predicted_values,
    )
    policy = OnnxPolicy(directory)
    knowledge = policy.metadata.device_knowledge()
    features = load_device_features(directory, policy.metadata, knowledge)
    assert features is not None
    features.reset()
    interval = policy.metadata.frame_interval_s
    link_quality = LinkQualityReport(LinkQualityModel(), frame_interval_s=interval)
    rng = np.random.default_rng(0)
    with_features, observations = [], []
    for step in range(n_calls):
        arrival = step * interval
        knowledge.record_transfer(
            int(rng.integers(100, 5_000)), float(rng.uniform(1e-3, 0.01)), arrival
        )
        start_s = arrival + float(rng.uniform(0.0, interval))
        start = time.perf_counter_ns()
        report = link_quality.report(lambda _: 4e6, start_s)
        observation = features.extend(
            knowledge.observe(start_s, start_s - arrival, report), arrival, start_s
        )
        policy(observation)
        with_features.append(time.perf_counter_ns() - start)
        observations.append(observation)
    policy_only = []
    for observation in observations:
        start = time.perf_counter_ns()
        policy(observation)
        policy_only.append(time.perf_counter_ns() - start)
    full_us = np.array(with_features[100:]) / 1e3
    alone_us = np.array(policy_only[100:]) / 1e3
    return {
        "median_us": float(np.median(full_us)),
        "p99_us": float(np.percentile(full_us, 99)),
        "policy_only_median_us": float(np.median(alone_us)),
        "ratio_to_policy_only": float(np.median(full_us) / np.median(alone_us)),
        "calls": n_calls - 100,
    }


def bench_load(directory: Path, n_devices: int = 8, n_requests: int = 200) -> dict[str, Any]:
    """Concurrent devices against one server over loopback."""
    from splitrl.models.early_exit import EarlyExitNet
    from splitrl.runtime.onnx_export import export_segments
    from splitrl.runtime.torch_segments import TorchSegments

    model = EarlyExitNet().eval()
    export_segments(model, directory, label="EarlyExitNet (untrained)")
    plan = [(2, 2, 3), (1, 2, 2), (2, 0, 6), (2, 4, 5), (0, 2, 0), (2, 1, 3)]
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, size=(n_requests, 1, 64, 64), dtype=np.uint8)
    results: list[list[RequestRecord]] = [[] for _ in range(n_devices)]

    def device(index: int, port: int) -> None:
        calls = iter(range(n_requests))

        def policy(_: np.ndarray) -> tuple[int, int, int]:
            return plan[(next(calls) + index) % len(plan)]

        knowledge = DeviceKnowledge(LAYOUT, 2.4e6, 0.2, 0.01)
        connection = ServerConnection(("127.0.0.1", port))
        try:
            runtime = DeviceRuntime(
                OnnxSegments(directory),
                policy,
                DEFAULT_ACTIONS,
                knowledge,
                connection,
                link_quality=lambda _: 2.4e6,
            )
            results[index] = runtime.run(((x, None) for x in inputs), frame_interval_s=0.0)
        finally:
            connection.close()

    with ServerThread(TorchSegments(model), ServerSettings(workers=1)) as server:
        threads = [threading.Thread(target=device, args=(i, server.port)) for i in range(n_devices)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        served, rejected = server.server.served, server.server.rejected
    records = [record for device_records in results for record in device_records]
    offloaded = [r for r in records if not r.device_only]
    return {
        "devices": n_devices,
        "requests_per_device": n_requests,
        "requests": len(records),
        "ok": sum(r.status == "ok" for r in records),
        "lost_or_failed": sum(r.status != "ok" for r in records),
        "offloaded": len(offloaded),
        "server_replies": served,
        "server_rejected": rejected,
        "wall_s": elapsed,
        "requests_per_s": len(records) / elapsed,
        "offloaded_per_s": len(offloaded) / elapsed,
        # every frame arrives at once, so the latency after the device picked the request up
        "median_offloaded_ms": 1e3 * statistics.median(r.latency_s - r.wait_s for r in offloaded),
    }


def _attack(port: int, forged: bytes, flooding: Any, stop: Any, sent: Any) -> None:
    """Keep 16 ``forged`` messages in flight on one connection while ``flooding`` is set."""
    in_flight = count = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        while not stop.is_set():
            if flooding.is_set():
                sock.sendall(forged * (16 - in_flight))
                count += 16 - in_flight
                in_flight = 16
            if in_flight:
                recv_message(sock)
                in_flight -= 1
            else:
                flooding.wait(0.05)
    with sent.get_lock():
        sent.value += count


def _round_trips(port: int, body: bytes, n_requests: int) -> list[float]:
    """Seconds per request of a client that sends one request at a time."""
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n_requests):
            start = time.perf_counter()
            sock.sendall(frame_message(body))
            if not Reply.decode(recv_message(sock)).ok:
                raise RuntimeError("the normal client's request was refused")
            times.append(time.perf_counter() - start)
            time.sleep(0.005)
    return times


def bench_flood(
    n_rounds: int = 6, requests_per_round: int = 60, n_attackers: int = 4
) -> dict[str, Any]:
    """A normal client's latency, idle and under a flood of forged amplifying frames.

    Idle and flooded rounds alternate, so that other load on the machine weighs on both alike.
    """
    from splitrl.codecs import encode
    from splitrl.models.early_exit import EarlyExitNet
    from splitrl.runtime.torch_segments import TorchSegments

    model = EarlyExitNet().eval()
    x = np.random.default_rng(0).integers(0, 256, size=(1, 64, 64), dtype=np.uint8)
    body = Request(1, 0, 0, encode(x, "lossless")).encode()
    frame = encode(np.zeros((1, 8192, 8192), np.uint8), 1)
    forged = frame_message(Request(0, 0, 0, frame).encode())
    # fork: the attackers start at once, without importing anything
    context = multiprocessing.get_context("fork")
    flooding, stop, sent = context.Event(), context.Event(), context.Value("q", 0)
    idle: list[float] = []
    flooded: list[float] = []
    flood_s = 0.0
    rejected = 0
    with ServerThread(TorchSegments(model), ServerSettings(workers=1)) as server:
        attackers = [
            context.Process(target=_attack, args=(server.port, forged, flooding, stop, sent))
            for _ in range(n_attackers)
        ]
        for attacker in attackers:
            attacker.start()
        _round_trips(server.port, body, 20)  # warm-up
        for _ in range(n_rounds):
            flooding.clear()
            time.sleep(0.2)  # the attackers' last replies drain
            idle += _round_trips(server.port, body, requests_per_round)
            flooding.set()
            before = server.server.rejected
            while server.server.rejected < before + 200:
                time.sleep(0.01)  # the flood runs
            before, start = server.server.rejected, time.perf_counter()
            flooded += _round_trips(server.port, body, requests_per_round)
            flood_s += time.perf_counter() - start
            rejected += server.server.rejected - before
        stop.set()
        flooding.set()
        for attacker in attackers:
            attacker.join(30)
        peak_buffered = server.server.budget.peak
    idle_p99, flood_p99 = float(np.percentile(idle, 99)), float(np.percentile(flooded, 99))
    return {
        "requests_idle": len(idle),
        "requests_flooded": len(flooded),
        "attackers": n_attackers,
        "forged_frame_bytes": len(frame),
        "forged_frame_declares_elements": 2**26,
        "forged_refused_per_s": rejected / flood_s,
        "forged_sent": int(sent.value),
        "idle_median_ms": 1e3 * float(np.median(idle)),
        "idle_p99_ms": 1e3 * idle_p99,
        "flood_median_ms": 1e3 * float(np.median(flooded)),
        "flood_p99_ms": 1e3 * flood_p99,
        "p99_ratio": flood_p99 / idle_p99,
        "peak_buffered_bytes": peak_buffered,
        "goal_p99_ratio": 2.0,
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with (
        tempfile.TemporaryDirectory() as policy_dir,
        tempfile.TemporaryDirectory() as hindsight_dir,
        tempfile.TemporaryDirectory() as seg_dir,
    ):
        results = {
            "decision": bench_decision(Path(policy_dir)),
            "decision_predicted_values": bench_decision_predicted_values(Path(hindsight_dir)),
            "load": bench_load(Path(seg_dir)),
            "flood": bench_flood(),
        }
    for section, values in results.items():
        print(f"{section}: {values}")
    print(f"wrote {write_results('runtime', results)}")


if __name__ == "__main__":
    main()
