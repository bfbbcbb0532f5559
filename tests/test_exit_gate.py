"""The device's confidence gate at the early exits: routing, accuracies given the gate, hindsight
values that price it, the named scenario, the export (ONNX and C) and the bad settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from splitrl.agents.baselines import ConfidenceGatePolicy, GeometricMPCPolicy
from splitrl.agents.rollout import run_episodes
from splitrl.envs import SplitComputingEnv, get_scenario
from splitrl.envs.actions import exits_passed_on_device
from splitrl.envs.channels import ConstantChannel, MarkovChannel
from splitrl.envs.exit_gate import NOT_STOPPED
from splitrl.envs.scenarios import DEFAULT_EXIT_GATE
from splitrl.profiles.schema import Profile
from splitrl.runtime import c_build
from splitrl.runtime.segments import softmax_prediction


def exit_0_confidence(profile: Profile) -> np.ndarray:
    """Every sample's confidence at exit 0, from the device's own tensor."""
    return profile.confidence[:, profile.exit_stages[0], 0, 0].astype(float)


def median_gate(profile: Profile) -> float:
    """A threshold that about half the samples clear at exit 0."""
    return float(np.median(exit_0_confidence(profile)))


def gated_env(profile: Profile, **kwargs: object) -> SplitComputingEnv:
    return SplitComputingEnv(profile=profile, exit_gate=median_gate(profile), **kwargs)  # type: ignore[arg-type]


def test_a_confident_request_stops_at_the_early_exit_its_action_computes(
    tiny_profile: Profile,
) -> None:
    env = gated_env(tiny_profile, channel=ConstantChannel(2e6), frame_interval_s=1.0, horizon=400)
    k_0, k_1 = tiny_profile.exit_stages
    assert k_0 < k_1
    confidence = exit_0_confidence(tiny_profile)
    env.reset(seed=0)
    # offloaded after exit 0's stages: the gate reads exit 0; offloaded at the input: it cannot
    passes, skips = (1, k_0, 0), (1, 0, 0)
    stopped = went_on = 0
    for step in range(200):
        action = passes if step % 2 == 0 else skips
        *_, info = env.step(np.array(action))
        sample = info["sample_index"]
        confident = confidence[sample] > env.exit_gate
        if action == passes and confident:
            stopped += 1
            assert info["gate_exit"] == 0
            assert tuple(info["canonical_action"]) == (0, k_0, 0)
            assert info["payload_bytes"] == 0
            assert info["correct"] == tiny_profile.correct[sample, k_0, 0, 0]
        else:
            went_on += action == passes
            assert info["gate_exit"] == NOT_STOPPED
            assert tuple(info["canonical_action"]) == action
            assert info["payload_bytes"] == tiny_profile.payload_bytes[sample, action[1], 0]
    assert stopped > 10 and went_on > 10


def test_the_gated_world_serves_what_the_gate_reference_does(tiny_profile: Profile) -> None:
    threshold = median_gate(tiny_profile)

    def env(exit_gate: float | None = None, gate_heads: bool = False) -> SplitComputingEnv:
        return SplitComputingEnv(
            profile=tiny_profile,
            channel=MarkovChannel(),
            horizon=300,
            exit_gate=exit_gate,
            gate_heads=gate_heads,
        )

    seeds = range(3)
    gated = run_episodes(GeometricMPCPolicy(), env(exit_gate=threshold), seeds)
    reference = run_episodes(ConfidenceGatePolicy(threshold), env(gate_heads=True), seeds)
    plain = run_episodes(GeometricMPCPolicy(), env(gate_heads=True), seeds)
    np.testing.assert_allclose(gated.reward, reference.reward)
    assert not np.allclose(gated.reward, plain.reward)


def test_evaluate_actions_prices_the_gate_as_the_step_serves_it(tiny_profile: Profile) -> None:
    env = gated_env(tiny_profile, channel=MarkovChannel(), horizon=300)
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    stopped = 0
    for _ in range(150):
        outcomes = env.evaluate_actions(know_labels=True)
        index = int(rng.integers(len(outcomes.actions)))
        action = outcomes.actions[index]
        # the hindsight value: the accuracy given the gate, not this sample's luck
        expected = env.evaluate_actions().reward[index]
        from_now, _ = env.evaluate_action_from(action, env.request_start_s)
        *_, reward, _, _, info = env.step(action)
        stopped += info["gate_exit"] != NOT_STOPPED
        assert outcomes.reward[index] == pytest.approx(reward, abs=1e-12)
        assert outcomes.payload_bytes[index] == info["payload_bytes"]
        assert from_now == pytest.approx(expected, abs=1e-12)
    assert stopped > 5


def test_expected_accuracy_is_the_accuracy_given_what_the_gate_saw(tiny_profile: Profile) -> None:
    env = gated_env(tiny_profile, channel=ConstantChannel(2e6), frame_interval_s=1.0)
    threshold = env.exit_gate
    assert threshold is not None
    k_0 = tiny_profile.exit_stages[0]
    confident = exit_0_confidence(tiny_profile) > threshold
    stop_accuracy = tiny_profile.correct[confident, k_0, 0, 0].mean()
    env.reset(seed=2)
    seen = set()
    for _ in range(60):
        outcomes = env.evaluate_actions()
        sample = env.step(np.array((0, k_0, 0)))[-1]["sample_index"]
        assert outcomes.gave_up is None or not outcomes.gave_up.any()
        for index, (e, s, b) in enumerate(outcomes.actions.tolist()):
            if e == 1 and k_0 <= s:
                # computes exit 0 on the device: stopped there, or the harder rest goes on
                expected = (
                    stop_accuracy
                    if confident[sample]
                    else tiny_profile.correct[~confident, s, b, e].mean()
                )
                assert outcomes.correct[index] == pytest.approx(expected)
                seen.add(bool(confident[sample]))
            elif e == 1:
                assert outcomes.correct[index] == pytest.approx(
                    tiny_profile.correct[:, s, b, e].mean()
                )
    assert seen == {True, False}


def test_on_the_shipped_profile_the_confident_requests_are_the_easy_ones() -> None:
    env = SplitComputingEnv("default-timeout-gate")
    assert env.gate is not None
    profile = env.profile
    k_0 = profile.exit_stages[0]
    exit_0 = profile.correct[:, k_0, 0, 0].mean()
    assert env.gate.stop_accuracy[0] > exit_0 + 0.05
    # an offload after exit 0's stages goes on with the harder rest: below its plain accuracy
    passes = [
        i
        for i, (e, s, _) in enumerate(env.actions.canonical_actions())
        if e == 2 and k_0 <= s < profile.exit_stages[2]
    ]
    assert passes
    for i in passes:
        e, s, b = env.actions.canonical_actions()[i]
        assert env.gate.go_accuracy[i] < profile.correct[:, s, b, e].mean()


def test_the_named_scenario_has_the_gate() -> None:
    scenario = get_scenario("default-timeout-gate")
    assert scenario.exit_gate == DEFAULT_EXIT_GATE
    assert scenario.transfer_timeout_s == get_scenario("default-timeout").transfer_timeout_s
    env = SplitComputingEnv("default-timeout-gate")
    assert env.exit_gate == DEFAULT_EXIT_GATE and env.gate is not None
    assert SplitComputingEnv("default-timeout").gate is None


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, float("nan"), True, "0.5"])
def test_a_bad_exit_gate_is_refused(tiny_profile: Profile, value: object) -> None:
    with pytest.raises(ValueError, match="exit_gate"):
        SplitComputingEnv(profile=tiny_profile, exit_gate=value)  # type: ignore[arg-type]


def test_a_scenario_file_with_a_bad_exit_gate_is_refused(tmp_path: Path) -> None:
    fields = get_scenario("default-timeout-gate").to_dict()
    fields["exit_gate"] = 2.0
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(fields))
    with pytest.raises(ValueError, match="exit_gate must be a confidence"):
        SplitComputingEnv(str(path))


def test_the_live_mode_refuses_the_gate(tiny_profile: Profile) -> None:
    with pytest.raises(ValueError, match="exit_gate needs the profile's measured confidences"):
        SplitComputingEnv(profile=tiny_profile, exit_gate=0.5, mode="live")


def test_a_policy_trained_with_the_gate_exports_it_for_the_device_runtime_and_in_c(
    tiny_profile_path: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    from splitrl.runtime.c_export import export_c_run
    from splitrl.runtime.exported_policy import PolicyMetadata
    from splitrl.runtime.onnx_export import export_run
    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train
    from tests.conftest import tiny_staged_model

    fields = get_scenario("default-timeout-gate").to_dict()
    fields.update(name="tiny-gate", profile=str(tiny_profile_path), horizon=20, exit_gate=0.4)
    scenario = tmp_path / "tiny-gate.yaml"
    scenario.write_text(yaml.safe_dump(fields))
    config = TrainConfig(
        scenario=str(scenario),
        timesteps=40,
        eval_freq=0,
        checkpoint_freq=0,
        out=tmp_path / "runs",
        hyperparameters={"learning_starts": 20, "batch_size": 8, "buffer_size": 100},
    )
    run_dir = train(config).run_dir.path
    metadata, _ = export_run(run_dir, tmp_path / "out", model=tiny_staged_model())
    assert metadata.exit_gate == 0.4
    assert PolicyMetadata.load(tmp_path / "out").exit_gate == 0.4
    # the C policy carries it too: its firmware calls read the same exits and the same stop
    c_metadata = export_c_run(run_dir, tmp_path / "c")
    assert c_metadata.exit_gate == 0.4
    header = (tmp_path / "c" / "splitrl_policy.h").read_text()
    assert "#define SPLITRL_POLICY_HAS_EXIT_GATE 1" in header
    assert "#define SPLITRL_POLICY_EXIT_GATE 0.4" in header
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the C gate's calls are not compiled here")
    actions = c_metadata.actions
    host = c_build.HostPolicy(
        tmp_path / "c", tmp_path / "build", len(c_metadata.feature_names), actions.n_actions
    )
    stages = c_metadata.exit_stages
    gated = 0
    for e, s, b in actions.canonical_actions():
        expected = exits_passed_on_device(stages, int(e), int(s))
        assert host.gate_exits((int(e), int(s), int(b))) == expected, (e, s, b)
        gated += bool(expected)
    assert gated > 0
    rng = np.random.default_rng(0)
    stops = 0
    for scale in rng.uniform(0.1, 6.0, size=400):
        logits = (rng.normal(size=10) * scale).astype(np.float32)
        _, confidence = softmax_prediction(logits)
        if abs(confidence - 0.4) < 1e-9:
            continue  # a float tie; the sums may round differently
        assert host.gate_stops(logits) == (confidence > 0.4), logits
        stops += confidence > 0.4
    assert 0 < stops < 400


@pytest.mark.parametrize("value", [0, 1, -1, "0.5", True])
def test_a_policy_file_with_a_bad_exit_gate_is_refused(value: object) -> None:
    from splitrl.runtime.exported_policy import exit_gate_of

    assert exit_gate_of(None) is None and exit_gate_of(0.5) == 0.5
    with pytest.raises(ValueError, match="exit_gate must be a confidence"):
        exit_gate_of(value)


def test_expected_values_average_the_branches_over_the_profiles_samples(
    tiny_profile: Profile,
) -> None:
    env = gated_env(tiny_profile, channel=ConstantChannel(2e6), frame_interval_s=1.0)
    assert env.gate is not None
    env.reset(seed=0)
    predicted = env.predict_actions()
    values, accuracy = predicted.reward, predicted.correct
    gated = env.gate.expected_values(values, accuracy)
    threshold = env.exit_gate
    stages = tiny_profile.exit_stages
    local = {
        g: next(i for i, a in enumerate(predicted.actions.tolist()) if a == [g, stages[g], 0])
        for g in range(len(stages))
    }
    for index, (e, s, b) in enumerate(predicted.actions.tolist()):
        total = 0.0
        for sample in range(tiny_profile.n_samples):
            confident = [
                g
                for g in range(e)
                if stages[g] <= min(s, stages[e])
                and tiny_profile.confidence[sample, stages[g], 0, g] > threshold
            ]
            if confident:
                g = confident[0]
                correct = tiny_profile.correct[sample, stages[g], 0, g]
                total += values[local[g]] - accuracy[local[g]] + correct
            else:
                correct = tiny_profile.correct[sample, s, b, e]
                total += values[index] - accuracy[index] + correct
        assert gated[index] == pytest.approx(total / tiny_profile.n_samples), (e, s, b)
    # an action that computes no early exit on the device keeps its value
    assert gated[local[0]] == pytest.approx(values[local[0]])
