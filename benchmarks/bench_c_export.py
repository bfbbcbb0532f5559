"""The policy as C for microcontrollers: agreement with ONNX, sizes, decision time, M7 estimates.

``python -m benchmarks.bench_c_export RUN`` exports the SACD policy of a training run with
``--format c`` in float32 and in int8, collects observations from rollouts of the run's env
(the exported policy acting, with a share of random actions), and measures:

* agreement of the C actions with ``policy.onnx``, and the top-two logit gap (of the actor's
  float32 logits) of every disagreement;
* weight bytes, and text/data/bss of the policy and of the codec's encoder compiled for the
  Cortex-M7 (``arm-none-eabi-size``);
* decision time in C on this host (``gcc -O2``, best of 5 rounds over the observations);
* instructions per decision and per 8-bit encoding on QEMU's Cortex-M7 with ``-icount``:
  estimates only, QEMU is not cycle-accurate;
* the same sizes and times for an actor of SACD's default architecture (256x256, untrained: size
  and time do not depend on the weights' values).

Results go to ``results/bench_c_export.json``. The M7 rows need ``arm-none-eabi-gcc``,
``libnewlib-arm-none-eabi`` and ``qemu-system-arm``; without them they are left out.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import write_results
from splitrl.agents.sacd import SACD
from splitrl.runtime import c_build
from splitrl.runtime.c_export import export_c_run, write_c_policy
from splitrl.runtime.exported_policy import OnnxPolicy, PolicyMetadata
from splitrl.runtime.onnx_export import load_run

TIMING_HARNESS = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "splitrl_policy.h"

int main(int argc, char **argv) {
    FILE *file = fopen(argv[1], "rb");
    const int count = atoi(argv[2]);
    float *observations = malloc(sizeof(float) * SPLITRL_POLICY_N_FEATURES * count);
    if (file == NULL || observations == NULL || argc < 3 ||
        fread(observations, sizeof(float) * SPLITRL_POLICY_N_FEATURES, count, file) != (size_t)count) {
        return 1;
    }
    double best = 1e30;
    volatile int sink = 0;
    for (int round = 0; round < 5; round++) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (int index = 0; index < count; index++) {
            sink += splitrl_policy_act(observations + index * SPLITRL_POLICY_N_FEATURES).split;
        }
        clock_gettime(CLOCK_MONOTONIC, &end);
        const double seconds = (end.tv_sec - start.tv_sec) + 1e-9 * (end.tv_nsec - start.tv_nsec);
        best = seconds < best ? seconds : best;
    }
    printf("%.1f\n", 1e9 * best / count);
    return 0;
}
"""


def rollout_observations(run_dir: Path, export: Path, n: int, seed: int = 0) -> np.ndarray:
    """Observations of the run's env with the exported policy acting, 20% random actions."""
    _, env, _ = load_run(run_dir)
    policy = OnnxPolicy(export)
    canonical = env.actions.canonical_actions()
    rng = np.random.default_rng(seed)
    observations: list[np.ndarray] = []
    observation, _ = env.reset(seed=seed)
    while len(observations) < n:
        observations.append(observation)
        if rng.random() < 0.2:
            action = canonical[int(rng.choice(len(canonical)))]
        else:
            action = policy(observation)
        observation, _, terminated, truncated, _ = env.step(np.array(action))
        if terminated or truncated:
            observation, _ = env.reset(seed=int(rng.integers(2**31)))
    return np.array(observations, dtype=np.float32)


def weight_bytes(source: Path) -> int:
    """Bytes of the const weight arrays of a generated ``splitrl_policy.c``."""
    sizes = {"float": 4, "int8_t": 1}
    total = 0
    for kind, count in re.findall(
        r"static const (float|int8_t) LAYER\w+\[(\d+)\]", source.read_text()
    ):
        total += sizes[kind] * int(count)
    return total


def host_decision_ns(export: Path, observations: np.ndarray, build: Path) -> float:
    """Nanoseconds per ``splitrl_policy_act`` on this host (gcc -O2, best of 5 rounds)."""
    build.mkdir(parents=True, exist_ok=True)
    harness = build / "timing.c"
    harness.write_text(TIMING_HARNESS)
    binary = build / "timing"
    subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            f"-I{export}",
            str(harness),
            str(export / "splitrl_policy.c"),
            "-o",
            str(binary),
            "-lm",
        ],
        check=True,
    )
    data = build / "observations.bin"
    observations.astype(np.float32).tofile(data)
    result = subprocess.run(
        [str(binary), str(data), str(len(observations))], capture_output=True, text=True, check=True
    )
    return float(result.stdout)


def footprint(
    directory: Path, observations: np.ndarray, tensor: np.ndarray, n_actions: int, build: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sizes and times of one C export: ``(policy row, encoder row)``; the M7 parts need the
    cross toolchain and check that the emulated Cortex-M7 decides as the host."""
    host = c_build.HostPolicy(directory, build / "host", observations.shape[1], n_actions)
    row: dict[str, Any] = {
        "weight_bytes": weight_bytes(directory / "splitrl_policy.c"),
        "host_decision_ns": host_decision_ns(directory, observations, build / "time"),
    }
    encoder: dict[str, Any] = {}
    if c_build.environment_has_cross_toolchain():
        vectors = build / "vectors" / "check_vectors.h"
        vectors.parent.mkdir(parents=True)
        c_build.write_check_vectors(vectors, observations[:16], tensor)
        firmware = c_build.build_check_firmware(directory, vectors, build / "m7")
        output = c_build.parse_check_output(c_build.run_on_qemu(firmware.elf))
        if not np.array_equal(output.actions, host.act(observations[:16])):
            raise RuntimeError(f"{directory}: the Cortex-M7 decided otherwise than the host")
        instructions_per_tick = 200_000 / output.ticks["calibration"]
        row["m7_policy_sections"] = c_build.arm_sections([firmware.policy]).__dict__
        row["m7_instructions_per_decision"] = output.ticks["decide"] * instructions_per_tick / 16
        encoder["m7_encoder_sections"] = c_build.arm_sections([firmware.encoder]).__dict__
        encoder[f"m7_instructions_per_encode_{'x'.join(map(str, tensor.shape))}_8bit"] = (
            output.ticks["encode"] * instructions_per_tick
        )
    return row, encoder


def measure(run_dir: Path, n_observations: int) -> dict[str, Any]:
    """Every measurement of the module docstring for one training run."""
    agent, env, _ = load_run(run_dir)
    results: dict[str, Any] = {"run": str(run_dir), "observations": n_observations}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        exports = {q: root / q for q in ("float32", "int8")}
        for quantize, directory in exports.items():
            export_c_run(run_dir, directory, quantize=quantize)
        observations = rollout_observations(run_dir, exports["float32"], n_observations)
        allowed = torch.as_tensor(env.actions.mask())
        with torch.no_grad():
            logits = agent.policy.actor.masked_logits(torch.as_tensor(observations), allowed)
        ordered = np.sort(np.where(env.actions.mask(), logits.numpy(), -np.inf), axis=1)
        gaps = ordered[:, -1] - ordered[:, -2]
        n_parameters = sum(p.numel() for p in agent.policy.actor.parameters())
        results["actor_parameters"] = int(n_parameters)
        results["distinct_actions"] = len(
            np.unique(OnnxPolicy(exports["float32"]).actions(observations), axis=0)
        )
        tensor = np.maximum(np.random.default_rng(0).normal(size=(8, 14, 14)), 0).astype(np.float32)
        for quantize, directory in exports.items():
            onnx_actions = OnnxPolicy(directory).actions(observations)
            host = c_build.HostPolicy(
                directory, root / f"build-{quantize}", observations.shape[1], env.actions.n_actions
            )
            differ = np.flatnonzero((host.act(observations) != onnx_actions).any(axis=1))
            row, encoder = footprint(
                directory, observations, tensor, env.actions.n_actions, root / f"size-{quantize}"
            )
            results[quantize] = {
                "agreement": 1.0 - len(differ) / len(observations),
                "disagreements": len(differ),
                "largest_gap_of_a_disagreement": float(gaps[differ].max()) if len(differ) else 0.0,
                **row,
            }
            results.update(encoder)
        default = SACD("MlpPolicy", env, seed=0, device="cpu")
        metadata = PolicyMetadata.load(exports["float32"])
        results["default_architecture_parameters"] = sum(
            p.numel() for p in default.policy.actor.parameters()
        )
        for quantize in ("float32", "int8"):
            directory = root / f"default-{quantize}"
            write_c_policy(default.policy.actor, directory, metadata, quantize)
            results[f"default_architecture_{quantize}"], _ = footprint(
                directory, observations, tensor, env.actions.n_actions, root / f"dsize-{quantize}"
            )
        near_ties = int(np.sum(gaps <= 1e-5))
        results["near_ties_1e-5"] = near_ties
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="training run directory (model.zip + config)")
    parser.add_argument("--observations", type=int, default=10_000)
    args = parser.parse_args()
    results = measure(args.run_dir, args.observations)
    for key, value in results.items():
        print(f"{key}: {value}")
    print(f"wrote {write_results('c_export', results)}")


if __name__ == "__main__":
    main()
