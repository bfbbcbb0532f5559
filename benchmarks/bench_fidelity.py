"""Sim-to-real fidelity: measured end-to-end latency of real requests against the time model.

Run: ``.venv/bin/python -m benchmarks.bench_fidelity [--traces PATH ...] [--requests N]``;
writes ``results/bench_fidelity.json``. Needs the default profile, model and the Fashion-MNIST
test set; the traces default to the five in ``../shared/traces`` (skipped with the reason when
absent).

Per trace, the same requests run on two paths, each printed with the path's name:

* **kernel**: device and edge server in two network namespaces joined by a veth pair, real TCP,
  the device's egress shaped by an ``htb`` class whose rate follows the binned trace
  (:class:`~splitrl.runtime.netem.ShapedLink`); needs root, ``ip`` and ``tc`` with ``htb``, and is
  skipped with the reason elsewhere;
* **pacer**: loopback, the device's sender paced in Python to the same trace
  (:class:`~splitrl.runtime.pacing.TracePacer`); runs anywhere.

On both the round trip, which the veth pair lacks, is added by a userspace relay on the server
side that holds each reply for one draw of the environment's ``RTTModel``
(:class:`~splitrl.runtime.netem.ReplyDelayRelay`, in a process of its own); the prediction uses
the same draws in the same order. The policy offloads every request, with a seeded random ``(exit, split, bits)``, frames
every ``--frame-interval`` seconds; the server runs the default model (torch), the device its
ONNX segments.

The prediction is the environment's time model, :meth:`~splitrl.envs.time_model.RequestModel.serve`,
replayed over the same actions, message sizes, frame arrivals and trace (``host`` presets: the
profile's measured stage, head and codec times; an idle server): backlog wait, device compute,
encode, transfer of the message over the trace, the round trip's draw, server decode and compute.
Rows:

* ``PATH``: the full model. On the kernel path it adds the link's measured terms
  (:class:`~splitrl.envs.time_model.LinkOverheads`: header bytes per packet, the shaper's
  bucket, the reply's ACK). On both paths it adds the software stack's time (socket calls,
  thread and event-loop hops in device, relay and server, late wake-ups), estimated per request
  as the device could: the median *residual* of the last ``STACK_WINDOW`` requests answered
  before this one arrived. A request's residual is its measured latency less the model's
  prediction without a stack term (:func:`latency_residuals`); before any answer, the
  calibration below;
* ``PATH, stack measured before``: the stack's time as one constant per path
  (``LinkOverheads.stack_s``, the environment's term), measured before the traces: the median
  of measured minus predicted latency of ``CALIBRATION_REQUESTS`` requests over a constant
  100 Mbit/s link;
* ``PATH, no stack term``: the same without the stack's time;
* ``kernel, env model``: the environment's default model (no link terms, no stack time).

Errors, over the evaluated offloaded requests: ``|measured - predicted| / predicted`` of the
end-to-end latency (goals: median <= 15%, p90 <= 30%), and per component the median of
``measured - predicted`` in ms. Measured components: the device's own timings, the transfer from
the first byte handed to the socket until the server acknowledged the last, the server's service
time, and the rest of the latency as the round trip (the stack's time is predicted there too).
The machine may be shared: the benchmark prints the load average after each trace; medians say
more than tails. The relay runs in a process of its own (:func:`relay_process`); the shaper's
thread runs in the benchmark's process, beside the device's threads: so that it does not hold
the device's wake-ups for the interpreter's default 5 ms switch interval, the run uses
``SWITCH_INTERVAL_S``; the stack time of the first path is also calibrated at the default, for
comparison (``stack_ms_default_switch_interval``).
The environment's ``step`` CPU time with and without the kernel path's link terms is measured
first (the least of 20 rounds of 2000 steps, alternating).

``Verizon-EVDO-driving.up`` runs on a fixed segment that starts ``OUTAGE_LEAD_S`` before its
first outage of at least ``OUTAGE_MIN_S`` (capacity below 50 kbit/s).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table, write_results
from splitrl.envs.actions import ActionTable
from splitrl.envs.channels.trace_replay import TraceChannel
from splitrl.envs.observation import DeviceKnowledge, ObservationLayout
from splitrl.envs.rtt import RTTModel
from splitrl.envs.server_load import ServerLoad
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.envs.time_model import CostTables, LinkOverheads, RequestModel, ShaperBucket
from splitrl.envs.traces import Trace, load_trace
from splitrl.profiles.presets import get_device_preset, get_network_preset
from splitrl.runtime.device import DeviceRuntime, RequestRecord, ServerConnection
from splitrl.runtime.netem import (
    DEFAULT_BURST_BYTES,
    MSS_BYTES,
    WIRE_HEADER_BYTES,
    ReplyDelayRelay,
    ShapedLink,
    entered_namespace,
    shaping_unavailable,
)
from splitrl.runtime.pacing import TracePacer

TRACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces"
TRACE_NAMES = (
    "Verizon-LTE-short.up",
    "TMobile-LTE-short.up",
    "norway_bus_1",
    "norway_car_1",
    "Verizon-EVDO-driving.up",
)
SEGMENTED_TRACE = "Verizon-EVDO-driving.up"
OUTAGE_MIN_S = 3.0
OUTAGE_RATE_BPS = 50_000.0
OUTAGE_LEAD_S = 15.0
SEGMENT_S = 120.0
KERNEL_LINK = LinkOverheads(
    WIRE_HEADER_BYTES, MSS_BYTES, DEFAULT_BURST_BYTES, reply_ack_bytes=WIRE_HEADER_BYTES
)
#: requests, over a fast constant link, that measure the software stack's time of a path
CALIBRATION_REQUESTS = 50
#: answered requests whose median residual estimates the stack time of the next request
STACK_WINDOW = 20
#: the interpreter's thread switch interval during the run (Python's default: 5 ms)
SWITCH_INTERVAL_S = 0.0005
CALIBRATION_RATE_BPS = 1e8
GOAL_MEDIAN = 0.15
GOAL_P90 = 0.30
COMPONENTS = ("wait", "device_compute", "encode", "transfer", "server", "rtt")


@dataclass(frozen=True)
class Setup:
    """What both paths share: model segments, action table, costs, requests, round trips."""

    segments_dir: Path
    actions: ActionTable
    codec: dict[str, Any]
    costs: CostTables
    samples: list[tuple[np.ndarray, int]]
    plan: list[tuple[int, int, int]]
    rtt_draws: list[float]
    frame_interval_s: float
    serve_args: tuple[str, ...] = ("--model", "default", "--read-timeout", "120")


def offload_plan(actions: ActionTable, n_requests: int, seed: int) -> list[tuple[int, int, int]]:
    """A seeded random offloading action ``(e, s, b)`` per request."""
    offloaded = [
        (e, s, b)
        for e, k_e in enumerate(actions.exit_stages)
        for s in range(k_e)
        for b in range(len(actions.bit_options))
    ]
    rng = np.random.default_rng(seed)
    return [offloaded[i] for i in rng.integers(len(offloaded), size=n_requests)]


def outage_segment(trace: Trace) -> Trace:
    """``SEGMENT_S`` seconds of ``trace`` from ``OUTAGE_LEAD_S`` before its first long outage."""
    boundaries, rates = trace.boundaries_s, trace.rates_bps
    outage_start = None
    for k, rate in enumerate(rates):
        if rate >= OUTAGE_RATE_BPS:
            outage_start = None
            continue
        outage_start = boundaries[k] if outage_start is None else outage_start
        if boundaries[k + 1] - outage_start >= OUTAGE_MIN_S:
            break
    else:
        raise ValueError(f"{trace.name} has no outage of {OUTAGE_MIN_S} s")
    assert outage_start is not None
    start = max(outage_start - OUTAGE_LEAD_S, 0.0)
    first = max(k for k in range(len(rates)) if boundaries[k] <= start)
    last = min(len(rates), next(k for k in range(len(rates)) if boundaries[k] >= start + SEGMENT_S))
    cut = [start, *boundaries[first + 1 : last], min(boundaries[last], start + SEGMENT_S)]
    return Trace(
        tuple(b - start for b in cut),
        rates[first:last],
        name=f"{trace.name}[{start:.1f}s+{SEGMENT_S:g}s]",
    )


def _policy(plan: Sequence[tuple[int, int, int]]) -> Callable[[np.ndarray], tuple[int, int, int]]:
    calls = iter(plan)
    return lambda _: next(calls)


def _run_device(
    setup: Setup, connection: ServerConnection, epoch: float | None
) -> list[RequestRecord]:
    from splitrl.runtime.segments import OnnxSegments

    interval = setup.frame_interval_s
    runtime = DeviceRuntime(
        OnnxSegments(setup.segments_dir, threads=1),
        _policy(setup.plan),
        setup.actions,
        DeviceKnowledge(ObservationLayout(4, link_quality=False), 2.4e6, 1.0, interval),
        connection,
        setup.codec,
    )
    return runtime.run(setup.samples, interval, epoch=epoch)


def _serve(setup: Setup, prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[str], int]:
    """``splitrl serve`` on the loopback (of the namespace ``prefix`` enters), and its port."""
    argv = [*prefix, sys.executable, "-m", "splitrl", "serve", *setup.serve_args, "--port", "0"]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        server.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return server, int(line.rsplit(":", 1)[1])


def _relay(
    listener: socket.socket,
    namespace: str | None,
    port: int,
    rtt_draws: list[float],
    stop: ProcessEvent,
) -> None:
    """A :class:`ReplyDelayRelay` from ``listener`` to the server's ``port`` on the loopback of
    ``namespace`` (``None``: this one), until ``stop`` is set."""

    def upstream() -> socket.socket:
        with entered_namespace(namespace) if namespace else contextlib.nullcontext():
            return socket.create_connection(("127.0.0.1", port))

    draws = iter(rtt_draws)
    with ReplyDelayRelay(listener, upstream, lambda: next(draws)):
        stop.wait()


@contextlib.contextmanager
def relay_process(
    listener: socket.socket, namespace: str | None, port: int, rtt_draws: list[float]
) -> Iterator[int]:
    """:func:`_relay` in a process of its own, like the network it stands for: its threads wake
    for every segment of a request, and beside the device's threads they would hold the
    device's interpreter. Yields the relay's port."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    relay = context.Process(
        target=_relay, args=(listener, namespace, port, rtt_draws, stop), daemon=True
    )
    relay.start()
    relay_port = int(listener.getsockname()[1])
    listener.close()  # the relay holds its own copy
    try:
        yield relay_port
    finally:
        stop.set()
        relay.join(10)
        if relay.is_alive():
            relay.kill()
            relay.join()


def run_kernel(setup: Setup, trace: Trace) -> tuple[list[RequestRecord], dict[str, Any]]:
    """The requests over real TCP through the shaped veth pair."""
    with ShapedLink(trace) as link:
        server, port = _serve(setup, link.command("server", []))
        try:
            listener = link.listen("server", link.server_address)
            with relay_process(listener, link.server_ns, port, setup.rtt_draws) as relay_port:
                connection = ServerConnection(
                    (link.server_address, relay_port), until_acked=True, connect=link.connect
                )
                try:
                    epoch = time.perf_counter() + 0.5
                    link.start_following(epoch)
                    records = _run_device(setup, connection, epoch)
                finally:
                    connection.close()
        finally:
            server.terminate()
            server.wait(30)
        lateness = [late for _, late in link.changes]
    return records, {
        "rate_changes": len(lateness),
        "rate_change_late_median_ms": 1e3 * float(np.median(lateness)) if lateness else 0.0,
        "rate_change_late_p99_ms": 1e3 * float(np.percentile(lateness, 99)) if lateness else 0.0,
    }


def run_pacer(setup: Setup, trace: Trace) -> tuple[list[RequestRecord], dict[str, Any]]:
    """The requests over loopback, the sender paced to the trace."""
    server, port = _serve(setup)
    try:
        listener = socket.create_server(("127.0.0.1", 0))
        with relay_process(listener, None, port, setup.rtt_draws) as relay_port:
            connection = ServerConnection(
                ("127.0.0.1", relay_port), TracePacer(trace), until_acked=True
            )
            try:
                records = _run_device(setup, connection, None)
            finally:
                connection.close()
    finally:
        server.terminate()
        server.wait(30)
    return records, {}


def predict(
    records: Sequence[RequestRecord], setup: Setup, trace: Trace, link: LinkOverheads | None
) -> list[dict[str, float]]:
    """The time model's components of every request: the environment's
    :meth:`~splitrl.envs.time_model.RequestModel.serve` replayed over the recorded actions,
    message sizes and arrivals, with the trace as the channel, this run's round-trip draws and an
    idle server (it serves this device alone).

    :param link: the link's terms (:class:`~splitrl.envs.time_model.LinkOverheads`); ``None``:
        the environment's default, the message alone crosses the channel.
    """
    model = RequestModel(
        setup.costs,
        setup.actions.exit_stages,
        np.array(setup.actions.canonical_actions(), dtype=np.int64),
        get_device_preset("host"),
        get_network_preset("wifi"),  # its radio energy only; the energy is not compared
        server_job_s=0.0,
        link=link,
    )
    channel = TraceChannel(trace, random_start=False)
    channel.reset(np.random.default_rng(0))
    server = ServerLoad(levels=(0.0, 0.0), transition_matrix=((0.5, 0.5), (0.5, 0.5)))
    server.reset(np.random.default_rng(0))
    device_free = -math.inf
    bucket: ShaperBucket | None = None
    draws = iter(setup.rtt_draws)
    predicted = []
    for record in records:
        e, s, b = record.action
        start = max(record.arrival_s, device_free)
        rtt_s = 0.0 if record.device_only else next(draws)
        (
            compute_s,
            encode_s,
            transfer_s,
            rtt_s,
            queue_s,
            server_s,
            _,
            device_free,
            done,
            _,
            bucket,
            _,
        ) = model.serve(
            e, s, b, start, record.message_bytes, rtt_s, None, server, channel, None, bucket
        )
        predicted.append(
            {
                "wait": start - record.arrival_s,
                "device_compute": compute_s,
                "encode": encode_s,
                "transfer": transfer_s,
                "server": queue_s + server_s,
                "rtt": rtt_s,
                "latency": done - record.arrival_s,
            }
        )
    return predicted


def latency_residuals(
    records: Sequence[RequestRecord], predicted: Sequence[dict[str, float]]
) -> list[float]:
    """Per request, its residual: the measured latency less the time model's prediction without
    a stack term. What is left is the software stack's time (socket calls, thread and event-loop
    hops, late wake-ups) and the transfer's own residual (the device sees a transfer end when its
    polling sees the last ACK). NaN for a request not answered or not offloaded.
    """
    return [
        r.latency_s - p["latency"] if r.status == "ok" and not r.device_only else math.nan
        for r, p in zip(records, predicted, strict=True)
    ]


def stack_estimates(
    records: Sequence[RequestRecord], predicted: Sequence[dict[str, float]], prior_s: float
) -> list[float]:
    """Per request, the stack's time as the device could estimate it when the request arrived:
    the median :func:`latency_residuals` of the last ``STACK_WINDOW`` requests answered by then
    (``prior_s`` while there are none)."""
    residuals = latency_residuals(records, predicted)
    answered = sorted(
        (r.arrival_s + r.latency_s, h)
        for r, h in zip(records, residuals, strict=True)
        if not math.isnan(h)
    )
    estimates = []
    for record in records:
        known = [h for at, h in answered if at <= record.arrival_s][-STACK_WINDOW:]
        estimates.append(float(np.median(known)) if known else prior_s)
    return estimates


def with_stack(
    predicted: Sequence[dict[str, float]],
    records: Sequence[RequestRecord],
    stack_s: Sequence[float],
) -> list[dict[str, float]]:
    """``predicted`` with each offloaded request's stack time added to its round trip."""
    return [
        p if r.device_only else p | {"rtt": p["rtt"] + stack, "latency": p["latency"] + stack}
        for p, r, stack in zip(predicted, records, stack_s, strict=True)
    ]


def measured_parts(record: RequestRecord) -> dict[str, float]:
    """The measured components of an offloaded request (the rest of the latency is the RTT).

    The transfer is the device's: from the first byte handed to the socket until the server
    acknowledged the last one (the server's own receive time misses how long the first packet
    waited in the shaper).
    """
    parts = {
        "wait": record.wait_s,
        "device_compute": record.decision_s + record.device_compute_s,
        "encode": record.encode_s,
        "transfer": record.transfer_s,
        "server": record.server_s,
    }
    parts["rtt"] = record.latency_s - sum(parts.values())
    parts["latency"] = record.latency_s
    return parts


def compare(
    records: Sequence[RequestRecord], predicted: Sequence[dict[str, float]]
) -> dict[str, Any]:
    """Errors over the offloaded requests that were answered."""
    pairs = [
        (measured_parts(r), p)
        for r, p in zip(records, predicted, strict=True)
        if not r.device_only and r.status == "ok"
    ]
    relative = np.array([abs(m["latency"] - p["latency"]) / p["latency"] for m, p in pairs])
    result: dict[str, Any] = {
        "offloaded_answered": len(pairs),
        "lost_or_failed": sum(r.status != "ok" for r in records),
        "median_abs_relative_error": float(np.median(relative)),
        "p90_abs_relative_error": float(np.percentile(relative, 90)),
        "median_measured_ms": 1e3 * float(np.median([m["latency"] for m, _ in pairs])),
        "median_predicted_ms": 1e3 * float(np.median([p["latency"] for _, p in pairs])),
    }
    for name in COMPONENTS:
        result[f"{name}_error_ms"] = 1e3 * float(np.median([m[name] - p[name] for m, p in pairs]))
    result["goals_met"] = bool(
        result["median_abs_relative_error"] <= GOAL_MEDIAN
        and result["p90_abs_relative_error"] <= GOAL_P90
    )
    return result


def make_setup(directory: Path, n_requests: int, frame_interval_s: float, seed: int) -> Setup | str:
    """The shared inputs, or why they are missing."""
    try:
        from splitrl.models.checkpoint import load_default_model
        from splitrl.profiles.io import load_profile
        from splitrl.runtime.device import load_test_canvases
        from splitrl.runtime.onnx_export import export_segments

        profile = load_profile("default")
        samples = list(load_test_canvases(0, n_requests, None))
        model = load_default_model()
    except (FileNotFoundError, ValueError) as error:
        return f"missing input: {error}"
    export_segments(model.eval(), directory, label="default model")
    host = get_device_preset("host")
    actions = ActionTable(profile.exit_stages, profile.n_splits, profile.bit_options)
    rtt = RTTModel()
    rtt.reset(np.random.default_rng(seed))
    return Setup(
        segments_dir=directory,
        actions=actions,
        codec=dict(profile.codec),
        costs=CostTables.build(profile, host, host),
        samples=samples,
        plan=offload_plan(actions, n_requests, seed),
        rtt_draws=[rtt.sample() for _ in range(n_requests)],
        frame_interval_s=frame_interval_s,
    )


Runner = Callable[[Setup, Trace], tuple[list[RequestRecord], dict[str, Any]]]
PATHS: dict[str, tuple[Runner, LinkOverheads | None]] = {
    "kernel": (run_kernel, KERNEL_LINK),
    "pacer": (run_pacer, None),
}


def calibrate_stack(setup: Setup, path: str) -> float:
    """The software stack's time per request on ``path``: the median of measured minus predicted
    latency of the first ``CALIBRATION_REQUESTS`` requests over a link of
    ``CALIBRATION_RATE_BPS``, where the transfers take almost nothing."""
    runner, link = PATHS[path]
    n = CALIBRATION_REQUESTS
    calibration = replace(
        setup, samples=setup.samples[:n], plan=setup.plan[:n], rtt_draws=setup.rtt_draws[:n]
    )
    trace = Trace.from_rates([CALIBRATION_RATE_BPS], slot_s=3600.0, name="calibration")
    records, _ = runner(calibration, trace)
    predicted = predict(records, calibration, trace, link)
    return float(
        np.median([r.latency_s - p["latency"] for r, p in zip(records, predicted, strict=True)])
    )


def bench_trace(setup: Setup, path: Path, stack_s: dict[str, float]) -> dict[str, Any]:
    """Every path on one trace, with its stack time measured before the traces: the full model
    (the link's terms and the stack time per request estimated from the requests answered
    before), the same with the stack time measured before the traces, without a stack time, and
    the env's own model (neither)."""
    trace = load_trace(path)
    if path.name == SEGMENTED_TRACE:
        trace = outage_segment(trace)
    result: dict[str, Any] = {"trace": trace.name}
    for name, calibrated_s in stack_s.items():
        runner, link = PATHS[name]
        records, info = runner(setup, trace)
        bare = predict(records, setup, trace, link)
        estimates = stack_estimates(records, bare, calibrated_s)
        result[name] = compare(records, with_stack(bare, records, estimates)) | info
        result[name]["stack_estimate_median_ms"] = 1e3 * float(np.median(estimates))
        result[f"{name}, stack measured before"] = compare(
            records,
            predict(records, setup, trace, replace(link or LinkOverheads(), stack_s=calibrated_s)),
        )
        result[f"{name}, no stack term"] = compare(records, bare)
        if link is not None:
            result[f"{name}, env model"] = compare(records, predict(records, setup, trace, None))
    return result


def step_cost(rounds: int = 20, steps: int = 2000) -> dict[str, float]:
    """CPU time per ``step`` of the default env with and without the kernel path's link terms
    (the least over ``rounds`` rounds of ``steps`` steps each, alternating, in this process)."""
    envs = {
        "off": SplitComputingEnv(),
        "kernel link terms": SplitComputingEnv(link_overheads=replace(KERNEL_LINK, stack_s=0.01)),
    }
    envs["off"].action_space.seed(0)
    actions = [envs["off"].action_space.sample() for _ in range(steps)]
    best = dict.fromkeys(envs, math.inf)
    for env in envs.values():
        env.reset(seed=0)
    for _ in range(rounds):
        for name, env in envs.items():
            start = time.process_time()
            for action in actions:
                if env.step(action)[3]:
                    env.reset()
            best[name] = min(best[name], (time.process_time() - start) / steps)
    return {f"{name}_us": 1e6 * seconds for name, seconds in best.items()} | {
        "ratio": best["kernel link terms"] / best["off"]
    }


def print_trace(result: dict[str, Any]) -> None:
    """One table per trace: the paths side by side, the error by component."""
    print(f"\n{result['trace']} (load average {result.get('load_average_1min', math.nan):.1f})")
    rows = [
        {"path": name} | values
        for name, values in result.items()
        if isinstance(values, dict) and "median_abs_relative_error" in values
    ]
    for name, values in result.items():
        if isinstance(values, dict) and "skipped" in values:
            print(f"  {name}: skipped ({values['skipped']})")
    columns = [
        ("path", "path", "s"),
        ("offloaded_answered", "n", "d"),
        ("median_abs_relative_error", "median err", ".3f"),
        ("p90_abs_relative_error", "p90 err", ".3f"),
        ("median_measured_ms", "meas ms", ".1f"),
        ("median_predicted_ms", "pred ms", ".1f"),
        *((f"{name}_error_ms", f"{name} ms", "+.2f") for name in COMPONENTS),
    ]
    print_table(rows, columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, nargs="*", help="uplink traces (default: the five)")
    parser.add_argument(
        "--requests", type=int, default=200, help="evaluated requests per trace and path"
    )
    parser.add_argument("--frame-interval", type=float, default=0.25, help="seconds between frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the actions and round trips")
    args = parser.parse_args()
    if args.requests < 1 or not args.frame_interval > 0:
        parser.error("--requests must be >= 1 and --frame-interval > 0")
    paths = args.traces or [TRACES_DIR / name for name in TRACE_NAMES]
    missing = [str(path) for path in paths if not path.is_file()]
    results: dict[str, Any]
    if missing:
        results = {"skipped": f"traces not found: {', '.join(missing)}"}
        print(results["skipped"])
        write_results("fidelity", results)
        return
    kernel_reason = shaping_unavailable()
    print("paths: pacer" + (" and kernel" if kernel_reason is None else f" only ({kernel_reason})"))
    cost = step_cost()
    print(
        f"env step CPU time: {cost['off_us']:.2f} us, with the kernel link terms "
        f"{cost['kernel link terms_us']:.2f} us (x{cost['ratio']:.2f})"
    )
    load_average = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as directory:
        n_requests = max(CALIBRATION_REQUESTS, args.requests)
        setup = make_setup(Path(directory), n_requests, args.frame_interval, args.seed)
        if isinstance(setup, str):
            print(f"skipped: {setup}")
            write_results("fidelity", {"skipped": setup})
            return
        paths_run = ["pacer"] if kernel_reason else ["kernel", "pacer"]
        default_switch_ms = 1e3 * calibrate_stack(setup, paths_run[0])
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        stack_s = {name: calibrate_stack(setup, name) for name in paths_run}
        print(
            f"stack time per request ({1e3 * SWITCH_INTERVAL_S:g} ms switch interval): "
            + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in stack_s.items())
            + f"; {paths_run[0]} at Python's default 5 ms: {default_switch_ms:.2f} ms"
        )
        setup = replace(
            setup,
            samples=setup.samples[: args.requests],
            plan=setup.plan[: args.requests],
            rtt_draws=setup.rtt_draws[: args.requests],
        )
        traces = []
        for path in paths:
            traces.append(bench_trace(setup, path, stack_s))
            if kernel_reason is not None:
                traces[-1]["kernel"] = {"skipped": kernel_reason}
            load_average.append(os.getloadavg()[0])
            traces[-1]["load_average_1min"] = load_average[-1]
            print_trace(traces[-1])
    results = {
        "requests": args.requests,
        "frame_interval_s": args.frame_interval,
        "kernel_path": "ran" if kernel_reason is None else f"skipped: {kernel_reason}",
        "stack_ms": {name: 1e3 * value for name, value in stack_s.items()},
        "stack_window": STACK_WINDOW,
        "switch_interval_s": SWITCH_INTERVAL_S,
        "stack_ms_default_switch_interval": default_switch_ms,
        "load_average_1min": {"min": min(load_average), "max": max(load_average)},
        "step_cost": cost,
        "goal_median": GOAL_MEDIAN,
        "goal_p90": GOAL_P90,
        "traces": traces,
    }
    print(f"wrote {write_results('fidelity', results)}")


if __name__ == "__main__":
    main()
