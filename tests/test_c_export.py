"""C export: the generated policy and the codec's encoder agree with Python, on this host and on
an emulated Cortex-M7 (skipped where gcc, arm-none-eabi-gcc or qemu-system-arm are missing)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from splitrl.agents.sacd import SACD
from splitrl.cli import main as cli_main
from splitrl.codecs import decode, encode
from splitrl.envs.actions import exits_passed_on_device
from splitrl.envs.observation import DeviceKnowledge
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.profiles.schema import Profile
from splitrl.runtime import c_build
from splitrl.runtime.c_export import (
    CExportError,
    dequantized,
    forward,
    mlp_layers,
    write_c_policy,
)
from splitrl.runtime.exported_policy import OnnxPolicy, PolicyMetadata
from splitrl.runtime.onnx_export import export_env_policy
from splitrl.runtime.segments import softmax_prediction

#: float32: a disagreement with ONNX is accepted only where the top-two logits are this close
FLOAT32_TIE = 1e-5
#: int8: the agreement required, and the top-two logit gap every disagreement must be under
INT8_AGREEMENT = 0.995
INT8_TIE = 0.05
N_ROLLOUT_OBSERVATIONS = 10_000

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
needs_cross = pytest.mark.skipif(
    not c_build.environment_has_cross_toolchain(),
    reason="arm-none-eabi-gcc, arm-none-eabi-size or qemu-system-arm is missing (Debian: "
    "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm; .ci/run installs them)",
)


@pytest.fixture(scope="module")
def env(tiny_profile: Profile) -> SplitComputingEnv:
    return SplitComputingEnv(profile=tiny_profile, horizon=20)


@pytest.fixture(scope="module")
def agent(env: SplitComputingEnv) -> SACD:
    """A SACD as initialized (seeded): its decisions vary over the tiny env's rollouts (five
    distinct actions), where a few hundred steps of training collapse them onto one or two, which
    would leave the parity checks with a single decision to compare. The demo's trained policy is
    measured by benchmarks/bench_c_export.py."""
    return SACD("MlpPolicy", env, policy_kwargs={"net_arch": [64, 64]}, seed=0, device="cpu")


def export(agent: SACD, env: SplitComputingEnv, directory: Path, quantize: str) -> Path:
    export_env_policy(agent, directory, env)
    write_c_policy(agent.policy.actor, directory, PolicyMetadata.load(directory), quantize)
    return directory


@pytest.fixture(scope="module")
def exports(
    agent: SACD, env: SplitComputingEnv, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    return {
        quantize: export(agent, env, tmp_path_factory.mktemp(quantize), quantize)
        for quantize in ("float32", "int8")
    }


@pytest.fixture(scope="module")
def host_policies(
    env: SplitComputingEnv, exports: dict[str, Path]
) -> dict[str, c_build.HostPolicy]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    return {
        quantize: c_build.HostPolicy(
            directory, directory / "build", len(env.layout.names), env.actions.n_actions
        )
        for quantize, directory in exports.items()
    }


@pytest.fixture(scope="module")
def rollout_observations(env: SplitComputingEnv) -> np.ndarray:
    """Observations the env produced in episodes of random actions."""
    rollout = SplitComputingEnv(profile=env.profile, horizon=20)
    rng = np.random.default_rng(0)
    canonical = rollout.actions.canonical_actions()
    observations: list[np.ndarray] = []
    observation, _ = rollout.reset(seed=0)
    while len(observations) < N_ROLLOUT_OBSERVATIONS:
        observations.append(observation)
        action = canonical[int(rng.choice(len(canonical)))]
        observation, _, terminated, truncated, _ = rollout.step(np.array(action))
        if terminated or truncated:
            observation, _ = rollout.reset(seed=int(rng.integers(2**31)))
    return np.array(observations, dtype=np.float32)


def top_two_gap(logits: np.ndarray) -> np.ndarray:
    ordered = np.sort(logits, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def reference_logits(agent: SACD, env: SplitComputingEnv, observations: np.ndarray) -> np.ndarray:
    allowed = torch.as_tensor(env.actions.mask())
    with torch.no_grad():
        logits = agent.policy.actor.masked_logits(torch.as_tensor(observations), allowed)
    return np.where(env.actions.mask(), logits.numpy(), -np.inf)


@needs_gcc
def test_float32_actions_match_onnx_on_rollouts(
    agent: SACD,
    env: SplitComputingEnv,
    exports: dict[str, Path],
    host_policies: dict[str, c_build.HostPolicy],
    rollout_observations: np.ndarray,
) -> None:
    onnx_actions = OnnxPolicy(exports["float32"]).actions(rollout_observations)
    c_actions = host_policies["float32"].act(rollout_observations)
    assert len(np.unique(onnx_actions, axis=0)) >= 3  # a check over several decisions
    differ = np.flatnonzero((onnx_actions != c_actions).any(axis=1))
    gaps = top_two_gap(reference_logits(agent, env, rollout_observations))
    print(f"float32: {len(differ)} of {len(rollout_observations)} differ, all near-ties")
    assert np.all(gaps[differ] <= FLOAT32_TIE)
    # the C logits are the actor's, to float32 rounding
    c_logits = host_policies["float32"].logits(rollout_observations[:500])
    expected = reference_logits(agent, env, rollout_observations[:500])
    allowed = env.actions.mask()
    np.testing.assert_allclose(c_logits[:, allowed], expected[:, allowed], rtol=0, atol=1e-5)
    assert np.all(c_logits[:, ~allowed] == -np.finfo(np.float32).max)


@needs_gcc
def test_int8_actions_agree_with_onnx_but_for_near_ties(
    agent: SACD,
    env: SplitComputingEnv,
    exports: dict[str, Path],
    host_policies: dict[str, c_build.HostPolicy],
    rollout_observations: np.ndarray,
) -> None:
    onnx_actions = OnnxPolicy(exports["int8"]).actions(rollout_observations)
    c_actions = host_policies["int8"].act(rollout_observations)
    differ = np.flatnonzero((onnx_actions != c_actions).any(axis=1))
    agreement = 1.0 - len(differ) / len(rollout_observations)
    gaps = top_two_gap(reference_logits(agent, env, rollout_observations))
    print(
        f"int8: agreement {agreement:.4f}, largest top-two gap of a disagreement "
        f"{gaps[differ].max() if len(differ) else 0.0:.2e}"
    )
    assert agreement >= INT8_AGREEMENT
    assert np.all(gaps[differ] <= INT8_TIE)
    # and the C int8 logits are those of the dequantized weights
    layers = dequantized(mlp_layers(agent.policy.actor, len(env.layout.names)))
    allowed = env.actions.mask()
    c_logits = host_policies["int8"].logits(rollout_observations[:500])
    np.testing.assert_allclose(
        c_logits[:, allowed], forward(layers, rollout_observations[:500])[:, allowed], atol=1e-5
    )


@needs_gcc
def test_observation_is_computed_from_measurements_as_in_the_env(
    env: SplitComputingEnv, host_policies: dict[str, c_build.HostPolicy]
) -> None:
    import ctypes

    library = host_policies["float32"].library
    history = env.layout.history_length
    n_features = len(env.layout.names)

    class Measurements(ctypes.Structure):
        _fields_ = [
            ("throughput_bps", ctypes.c_double * history),
            ("link_quality_bps", ctypes.c_double),
            ("seconds_since_transfer", ctypes.c_double),
            ("last_latency_s", ctypes.c_double),
            ("server_load", ctypes.c_double),
            ("backlog_s", ctypes.c_double),
        ]

    assert env.layout.link_quality
    rng = np.random.default_rng(3)
    for case in range(200):
        knowledge = DeviceKnowledge(
            env.layout, env.knowledge.prior_bps, env.reward_spec.deadline_s, env.frame_interval_s
        )
        measurements = Measurements()
        library.splitrl_policy_reset(ctypes.byref(measurements))
        now, end = 10.0, None
        for _ in range(int(rng.integers(0, history + 2))):
            rate = float(10 ** rng.uniform(2, 10))
            end = now - float(rng.uniform(0, 3))
            knowledge.record_transfer(1000, 8000 / rate, end)
            library.splitrl_policy_record_transfer(
                ctypes.byref(measurements), ctypes.c_double(rate)
            )
        latency, load = float(rng.uniform(0, 12)), float(rng.uniform(0, 1))
        knowledge.record_completion(now - 1.0, latency, load)
        backlog, link = float(rng.uniform(0, 3)), float(10 ** rng.uniform(2, 10))
        expected = knowledge.observe(now, backlog, link)
        measurements.throughput_bps[:] = list(knowledge.throughputs)
        measurements.link_quality_bps = link
        measurements.seconds_since_transfer = -1.0 if end is None else now - end
        measurements.last_latency_s = latency
        measurements.server_load = load
        measurements.backlog_s = backlog
        observed = np.empty(n_features, dtype=np.float32)
        library.splitrl_policy_observe(
            ctypes.byref(measurements), observed.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        )
        np.testing.assert_array_equal(observed, expected, err_msg=f"case {case}")
        assert math.isfinite(float(observed.sum()))


@needs_gcc
def test_without_a_gate_the_firmware_reads_no_exit_and_never_stops(
    env: SplitComputingEnv, exports: dict[str, Path], host_policies: dict[str, c_build.HostPolicy]
) -> None:
    """The tiny env has no confidence gate: the gate's calls list no exit for any action and
    stop no request, even one whose exit head is certain."""
    assert env.exit_gate is None
    header = (exports["float32"] / "splitrl_policy.h").read_text()
    assert "#define SPLITRL_POLICY_HAS_EXIT_GATE 0" in header
    host = host_policies["float32"]
    for e, s, b in env.actions.canonical_actions():
        assert host.gate_exits((int(e), int(s), int(b))) == []
    certain = np.array([50.0] + [0.0] * 9, dtype=np.float32)
    assert not host.gate_stops(certain)


@needs_gcc
def test_documented_stack_bound_holds(exports: dict[str, Path], tmp_path: Path) -> None:
    for directory in exports.values():
        usage = c_build.stack_usage([directory / "splitrl_policy.c"], tmp_path)
        bound = c_build.documented_stack_bytes(directory / "splitrl_policy.h")
        # decide -> act -> logits -> dense_* is the deepest chain (observe returns before act)
        calls = ("splitrl_policy_decide", "splitrl_policy_act", "splitrl_policy_logits")
        dense = max(size for name, size in usage.items() if name.startswith("dense"))
        chain = sum(usage[name] for name in calls) + dense
        assert 0 < chain <= bound, usage


@needs_gcc
@pytest.mark.parametrize("bits", range(1, 9))
def test_device_encoder_frames_equal_python(bits: int, tmp_path: Path) -> None:
    encoder = c_build.HostEncoder(tmp_path)
    rng = np.random.default_rng(bits)
    tensors = [
        rng.normal(size=(4, 6, 6)).astype(np.float32),
        np.maximum(rng.normal(size=(8, 7, 7)), 0).astype(np.float32),  # post-ReLU: runs
        np.zeros((3, 5), np.float32),
        rng.uniform(-3, -1, size=(1, 300)).astype(np.float32),
        np.repeat(rng.normal(size=(2, 1, 40)), 9, axis=1).astype(np.float32),
    ]
    for tensor in tensors:
        frame = encoder.encode(tensor, bits)
        assert frame == encode(tensor, bits=bits)
        assert decode(frame).shape == tensor.shape


def test_actor_with_other_inputs_or_parts_is_refused(env: SplitComputingEnv, agent: SACD) -> None:
    actor = agent.policy.actor
    n_features = len(env.layout.names)
    with pytest.raises(CExportError, match="observes shape"):
        mlp_layers(actor, n_features - 1)

    class WithPrior(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features_extractor = actor.features_extractor
            self.logits_net = actor.logits_net
            self.observation_space = actor.observation_space
            self.prior_scale = 1.0

    with pytest.raises(CExportError, match="action prior"):
        mlp_layers(WithPrior(), n_features)

    class Clipping(WithPrior):
        def __init__(self) -> None:
            super().__init__()
            self.prior_scale = 0.0
            self.clip_inputs = True

    with pytest.raises(CExportError, match="clips its inputs to its training range"):
        mlp_layers(Clipping(), n_features)

    class WithOutcomeHead(WithPrior):
        def __init__(self) -> None:
            super().__init__()
            self.prior_scale = 0.0
            self.outcome_head = nn.Linear(n_features, env.actions.n_actions)

    with pytest.raises(CExportError, match="outcome_head"):
        mlp_layers(WithOutcomeHead(), n_features)

    class WithNorm(WithPrior):
        def __init__(self) -> None:
            super().__init__()
            self.prior_scale = 0.0
            self.logits_net = nn.Sequential(nn.LayerNorm(n_features), *actor.logits_net)

    with pytest.raises(CExportError, match=r"logits_net\[0\] \(LayerNorm\)"):
        mlp_layers(WithNorm(), n_features)

    class Shifted(WithPrior):
        """The same modules, but logits that are not the MLP's: caught by value."""

        def __init__(self) -> None:
            super().__init__()
            self.prior_scale = 0.0

        def masked_logits(self, observation: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.logits_net(observation)
            return logits + observation[:, :1]

    with pytest.raises(CExportError, match="besides its MLP"):
        mlp_layers(Shifted(), n_features)


def test_cli_writes_c_beside_the_reference(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tiny_run
    out = tmp_path / "out"
    assert (
        cli_main(["export", str(run_dir), "--format", "c", "--quantize", "int8", "--out", str(out)])
        == 0
    )
    assert "int8 weights" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {
        "splitrl_policy.h",
        "splitrl_policy.c",
        "policy.json",
        "policy.onnx",
    }
    source = (out / "splitrl_policy.c").read_text()
    assert "float LAYER0_WEIGHT" in source and "int8_t LAYER1_WEIGHT" in source
    assert cli_main(["export", str(run_dir), "--quantize", "int8", "--out", str(tmp_path / "x")])
    assert "--quantize applies to --format c only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@needs_cross
def test_cortex_m7_build_and_emulated_run_match_the_host(
    env: SplitComputingEnv,
    agent: SACD,
    exports: dict[str, Path],
    host_policies: dict[str, c_build.HostPolicy],
    rollout_observations: np.ndarray,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(7)
    tensor = np.maximum(rng.normal(size=(4, 8, 8)), 0).astype(np.float32)
    observations = rollout_observations[::500][:16]
    head_logits = (rng.normal(size=(64, 10)) * rng.uniform(0.1, 6.0, size=(64, 1))).astype(
        np.float32
    )
    for quantize, directory in exports.items():
        vectors = tmp_path / quantize / "check_vectors.h"
        vectors.parent.mkdir()
        c_build.write_check_vectors(vectors, observations, tensor, head_logits)
        firmware = c_build.build_check_firmware(directory, vectors, tmp_path / quantize / "m7")
        output = c_build.parse_check_output(c_build.run_on_qemu(firmware.elf))
        np.testing.assert_array_equal(output.actions, host_policies[quantize].act(observations))
        assert output.frames == {bits: encode(tensor, bits=bits) for bits in range(1, 9)}
        # no gate in this export: no exit to read, no stop
        assert output.gate_exits and not any(output.gate_exits.values())
        assert output.gate_stops == [False] * len(head_logits)
        assert c_build.arm_sections([firmware.policy]).text > 0
        usage = c_build.stack_usage(
            [directory / "splitrl_policy.c"], tmp_path, c_build.M7_FLAGS, c_build.ARM_GCC
        )
        calls = ("splitrl_policy_decide", "splitrl_policy_act", "splitrl_policy_logits")
        chain = sum(usage[name] for name in calls)
        chain += max(size for name, size in usage.items() if name.startswith("dense"))
        assert chain <= c_build.documented_stack_bytes(directory / "splitrl_policy.h")
    # with a gate, the emulated device reads the exits and stops the requests Python does
    gated_env = SplitComputingEnv(profile=env.profile, horizon=20, exit_gate=0.4)
    gated = export(agent, gated_env, tmp_path / "gated", "float32")
    vectors = tmp_path / "gated" / "check_vectors.h"
    c_build.write_check_vectors(vectors, observations, tensor, head_logits)
    firmware = c_build.build_check_firmware(gated, vectors, tmp_path / "gated" / "m7")
    output = c_build.parse_check_output(c_build.run_on_qemu(firmware.elf))
    stages = gated_env.actions.exit_stages
    n_exits, n_splits, _ = gated_env.actions.nvec
    assert output.gate_exits == {
        (e, s): exits_passed_on_device(stages, e, s)
        for e in range(n_exits)
        for s in range(n_splits)
    }
    assert any(output.gate_exits.values())
    confidences = np.array([softmax_prediction(row)[1] for row in head_logits])
    assert output.gate_stops == [bool(c) for c in confidences > 0.4]
    assert 0 < sum(output.gate_stops) < len(head_logits)
