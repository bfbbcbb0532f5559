"""Export tests: the ONNX policy and segments agree with torch; run directories; the device imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from splitrl.agents.sacd import SACD
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.models.protocol import ExitSpec, InputSpec, StagedModule
from splitrl.profiles.schema import Profile
from splitrl.runtime.exported_policy import OnnxPolicy, PolicyMetadata, load_device_features
from splitrl.runtime.onnx_export import (
    PolicyGraph,
    export_env_policy,
    export_policy,
    export_run,
    export_segments,
    random_observations,
    torch_actions,
)
from splitrl.runtime.segments import OnnxSegments, SegmentError
from splitrl.training.run_dir import RunDirectory
from tests.conftest import tiny_inputs, tiny_staged_model

SEGMENT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def env(tiny_profile: Profile) -> SplitComputingEnv:
    return SplitComputingEnv(profile=tiny_profile, horizon=20)


@pytest.fixture(scope="module")
def agent(env: SplitComputingEnv) -> SACD:
    return SACD("MlpPolicy", env, policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")


@pytest.fixture(scope="module")
def exported(env: SplitComputingEnv, agent: SACD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policy")
    export_env_policy(agent, directory, env)
    return directory


def test_onnx_policy_matches_torch_on_random_observations(
    env: SplitComputingEnv, agent: SACD, exported: Path
) -> None:
    observations = random_observations(env.layout, 10_000, seed=1)
    onnx_actions = OnnxPolicy(exported).actions(observations)
    graph = PolicyGraph(agent.policy.actor, env.actions).eval()
    np.testing.assert_array_equal(onnx_actions, torch_actions(graph, observations))
    # the same actions as SACD's own deterministic prediction with the env's masks
    predicted, _ = agent.predict(
        observations[:500], deterministic=True, action_masks=env.action_masks()
    )
    np.testing.assert_array_equal(onnx_actions[:500], predicted)
    canonical = {tuple(a) for a in env.actions.canonical_actions()}
    assert {tuple(int(v) for v in a) for a in onnx_actions} <= canonical


def test_policy_metadata_describes_the_env(env: SplitComputingEnv, exported: Path) -> None:
    metadata = PolicyMetadata.load(exported)
    assert metadata.actions == env.actions
    assert list(metadata.feature_names) == env.layout.names
    assert metadata.link_quality is not None and metadata.link_quality == env.link_quality_model
    knowledge = metadata.device_knowledge()
    env.reset(seed=0)
    np.testing.assert_array_equal(
        knowledge.observe(0.0, 0.0, 3e6), env.knowledge.observe(0.0, 0.0, 3e6)
    )
    raw = json.loads((exported / "policy.json").read_text())
    assert raw["versions"]["opset"] == 17 and raw["canonical_actions"]


@pytest.mark.parametrize("version", [None, 0, 2])
def test_policy_of_another_observation_version_is_refused(
    exported: Path, tmp_path: Path, version: int | None
) -> None:
    for name in ("policy.onnx", "policy.json"):
        (tmp_path / name).write_bytes((exported / name).read_bytes())
    data = json.loads((tmp_path / "policy.json").read_text())
    assert data["observation_version"] == 1
    if version is None:  # exported before observations had versions
        del data["observation_version"]
    else:
        data["observation_version"] = version
    (tmp_path / "policy.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"observation version {version or 0}, this runtime"):
        OnnxPolicy(tmp_path)


def test_export_checks_the_link_quality_model(
    env: SplitComputingEnv, agent: SACD, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no link_quality model"):
        export_policy(
            agent,
            tmp_path,
            actions=env.actions,
            layout=env.layout,
            prior_bps=1e6,
            deadline_s=0.2,
            frame_interval_s=0.1,
        )
    assert not any(tmp_path.iterdir())


def test_export_needs_the_predictor_with_a_forecast(
    env: SplitComputingEnv, agent: SACD, tmp_path: Path
) -> None:
    """A forecast without its rule (or a rule without a forecast) is refused before any file."""
    from splitrl.envs.scenarios import get_scenario

    with pytest.raises(ValueError, match="needs predictor="):
        export_env_policy(agent, tmp_path, env, scenario=get_scenario("default"))
    with pytest.raises(ValueError, match="predictor='mpc' given for a policy without"):
        export_env_policy(agent, tmp_path, env, predictor="mpc")
    with pytest.raises(ValueError, match=r"context=\['mpc'\] given without predictor="):
        export_env_policy(agent, tmp_path, env, context=["mpc"])
    with pytest.raises(ValueError, match="memory=True given without predictor="):
        export_env_policy(agent, tmp_path, env, memory=True)
    for context, match in ((["bola"], "unknown predictor 'bola'"), (["mpc"], "observed once")):
        with pytest.raises(ValueError, match=match):
            export_env_policy(
                agent,
                tmp_path,
                env,
                scenario=get_scenario("default"),
                predictor="mpc",
                context=context,
            )
    assert not any(tmp_path.iterdir())


def test_altered_policy_file_is_refused(exported: Path, tmp_path: Path) -> None:
    for name in ("policy.onnx", "policy.json"):
        (tmp_path / name).write_bytes((exported / name).read_bytes())
    (tmp_path / "policy.onnx").write_bytes((exported / "policy.onnx").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="SHA-256"):
        OnnxPolicy(tmp_path)


def test_segments_match_torch(tmp_path: Path) -> None:
    model = tiny_staged_model()
    manifest = export_segments(model, tmp_path)
    assert manifest.max_abs_error <= SEGMENT_TOLERANCE
    inputs = tiny_inputs(n=16, seed=3)[0]
    runner = OnnxSegments(tmp_path)
    for e, spec in enumerate(model.exits):
        with torch.no_grad():
            expected = model(torch.as_tensor(inputs, dtype=torch.float32), e).numpy()
        got = runner.run_exit(runner.run_stages(inputs, 0, spec.after_stage), e)
        np.testing.assert_allclose(got, expected, atol=SEGMENT_TOLERANCE, rtol=0)
    (tmp_path / "stage_1.onnx").write_bytes(b"not onnx")
    with pytest.raises(SegmentError, match="SHA-256"):
        OnnxSegments(tmp_path)


def test_segments_with_batch_norm_stay_in_eval_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm2d(4)
    assert norm.running_mean is not None and norm.running_var is not None
    norm.running_mean.uniform_(-1.0, 1.0)
    norm.running_var.uniform_(0.5, 2.0)
    stages = [torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), norm, torch.nn.ReLU())]
    head = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    model = StagedModule(
        stages, [ExitSpec(1, head)], InputSpec((1, 8, 8), torch.float32, (0.0, 1.0))
    )
    manifest = export_segments(model.eval(), tmp_path)
    assert manifest.max_abs_error <= SEGMENT_TOLERANCE
    assert not any(module.training for module in model.modules())


def test_export_run_directory(tiny_run: Path, tmp_path: Path) -> None:
    metadata, manifest = export_run(tiny_run, tmp_path / "out", model=tiny_staged_model())
    assert metadata.identity["scenario"] == "default" and metadata.identity["profile"] == "tiny"
    assert manifest.exit_stages == (1, 3)
    run = RunDirectory(tiny_run)
    env = run.make_env()
    assert env.horizon == 20  # the run's scenario overrides (scenario_spec) are applied
    agent = SACD.load(run.model_path, device="cpu")
    observations = random_observations(env.layout, 1000, seed=2)
    graph = PolicyGraph(agent.policy.actor, env.actions).eval()
    np.testing.assert_array_equal(
        OnnxPolicy(tmp_path / "out").actions(observations), torch_actions(graph, observations)
    )


def test_export_refuses_what_is_not_a_sacd_run(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no config\.yaml"):
        export_run(tmp_path, tmp_path / "out", model=tiny_staged_model())
    run = RunDirectory(shutil.copytree(tiny_run, tmp_path / "run"))
    run.model_path.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.zip is missing"):
        export_run(run.path, tmp_path / "out", model=tiny_staged_model())
    run.write_config({**run.read_config(), "algo": "ppo"})
    with pytest.raises(ValueError, match="only SACD policies can be exported, the run trained ppo"):
        export_run(run.path, tmp_path / "out", model=tiny_staged_model())
    assert not (tmp_path / "out").exists()


def train_tiny(algo: str, profile_path: Path, out: Path) -> Path:
    """A short training of ``algo`` on the tiny profile; its run directory."""
    from splitrl.training.config import TrainConfig
    from splitrl.training.trainer import train

    config = TrainConfig(
        algo=algo,
        profile=str(profile_path),
        horizon=30,
        timesteps=80,
        seed=0,
        eval_freq=0,
        checkpoint_freq=0,
        hyperparameters={"learning_starts": 20, "batch_size": 16},
        out=out,
    )
    return train(config).run_dir.path


@pytest.fixture(scope="module")
def hindsight_run(tiny_profile_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short sacd-hindsight-mpc training: its policy observes mpc's predicted values (not the
    default predictor, so a device that ignored the recorded one would compute other features)."""
    return train_tiny("sacd-hindsight-mpc", tiny_profile_path, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def hindsight_export(hindsight_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hindsight") / "export"
    export_run(hindsight_run, directory, model=tiny_staged_model())
    return directory


def assert_device_acts_as_trained(run_dir: Path, export: Path, reference: Any) -> None:
    """On the same requests (random actions, so that offloads and backlogs move the knowledge
    the features read), the device's features from ``export`` equal ``reference``'s in the env,
    and the exported policy acts as the trained one does with them."""
    run = RunDirectory(run_dir)
    env = run.make_env()
    metadata = PolicyMetadata.load(export)
    device = load_device_features(export, metadata, env.knowledge, env.frame_interval_s)
    assert device is not None
    policy = run.load_policy("final")
    onnx, rng = OnnxPolicy(export), np.random.default_rng(0)
    canonical = np.array(env.actions.canonical_actions())
    for seed in (1, 2):
        observation, _ = env.reset(seed=seed)
        for member in (reference, policy):
            member.reset(env)
        device.reset()
        offloads = 0
        for _ in range(env.horizon):
            on_device = device.extend(observation, env._arrival, env.request_start_s)
            assert on_device.shape == (metadata.n_inputs,)
            np.testing.assert_array_equal(on_device, reference.extend(env, observation))
            assert onnx(on_device) == tuple(int(v) for v in policy.act(env, observation))
            action = canonical[rng.integers(len(canonical))]
            offloads += not env.actions.is_device_only(int(action[0]), int(action[1]))
            observation, *_ = env.step(action)
        assert offloads > 0


def test_predicted_value_policy_exports_with_its_forecast(
    hindsight_run: Path, hindsight_export: Path
) -> None:
    """On the same requests, the device's features from the export equal the env's, and the
    exported policy acts as the trained one does with them."""
    from splitrl.agents.features import PredictedActionValues

    metadata = PolicyMetadata.load(hindsight_export)
    run = RunDirectory(hindsight_run)
    env = run.make_env()
    assert metadata.predicted_values == "mpc"
    assert metadata.n_inputs == len(env.layout.names) + env.actions.n_actions
    assert "predicted_values" in metadata.feature_scaling
    assert {"forecast/scenario.json", "forecast/tiny.json", "forecast/tiny.npz"} <= set(
        metadata.files
    )
    assert_device_acts_as_trained(hindsight_run, hindsight_export, PredictedActionValues("mpc"))


def test_a_policy_that_observes_two_rules_exports_both(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    """A learner with context rules (``sacd-hindsight-mpc-quantile-robust``) records them in
    ``policy.json``, carries the link forecast its prior acts on, and the device computes both
    rules' values in the trained order."""
    from splitrl.agents.features import PredictedActionValues

    run_dir = train_tiny("sacd-hindsight-mpc-quantile-robust", tiny_profile_path, tmp_path)
    export = tmp_path / "export"
    metadata, _ = export_run(run_dir, export, model=tiny_staged_model())
    env = RunDirectory(run_dir).make_env()
    assert metadata.predicted_values == "mpc-quantile"
    assert metadata.context_values == ("robust-mpc",)
    assert PolicyMetadata.load(export).rules == ("robust-mpc", "mpc-quantile")
    assert metadata.n_inputs == len(env.layout.names) + 2 * env.actions.n_actions
    assert "forecast/link_forecast.npz" in metadata.files
    reference = PredictedActionValues("mpc-quantile", context=("robust-mpc",))
    assert_device_acts_as_trained(run_dir, export, reference)


@pytest.mark.parametrize("suffix", ["", "-memory", "-by-memory"])
def test_a_policy_with_a_gated_prior_exports_its_gate(
    suffix: str, tiny_profile_path: Path, tmp_path: Path
) -> None:
    """A learner whose prior mixes three rules by a learned gate
    (``sacd-hindsight-mpc-quantile-gated``, ``-gated-memory`` whose gate also reads the link
    memory, and ``-gated-by-memory`` whose gate reads the link memory alone) exports the gate
    inside the actor: the device computes the memory and the three rules' values and acts as the
    trained policy does."""
    from splitrl.agents.features import PredictedActionValues
    from splitrl.agents.link_memory import N_MEMORY_FEATURES

    memory = bool(suffix)
    learner = "sacd-hindsight-mpc-quantile-gated" + suffix
    run_dir = train_tiny(learner, tiny_profile_path, tmp_path)
    export = tmp_path / "export"
    metadata, _ = export_run(run_dir, export, model=tiny_staged_model())
    env = RunDirectory(run_dir).make_env()
    loaded = PolicyMetadata.load(export)
    assert loaded.rules == ("robust-mpc", "mpc-geometric", "mpc-quantile")
    assert loaded.link_memory == memory
    n_memory = N_MEMORY_FEATURES if memory else 0
    assert metadata.n_inputs == len(env.layout.names) + n_memory + 3 * env.actions.n_actions
    reference = PredictedActionValues(
        "mpc-quantile", context=("robust-mpc", "mpc-geometric"), memory=memory
    )
    assert_device_acts_as_trained(run_dir, export, reference)


def test_a_policy_that_observes_the_link_memory_exports_it(
    tiny_profile_path: Path, tmp_path: Path
) -> None:
    """A learner with the link memory (``sacd-hindsight-mpc-quantile-memory``) records it in
    ``policy.json`` and the device computes the memory, then the values, as in training."""
    from splitrl.agents.features import PredictedActionValues
    from splitrl.agents.link_memory import N_MEMORY_FEATURES

    run_dir = train_tiny("sacd-hindsight-mpc-quantile-memory", tiny_profile_path, tmp_path)
    export = tmp_path / "export"
    metadata, _ = export_run(run_dir, export, model=tiny_staged_model())
    env = RunDirectory(run_dir).make_env()
    loaded = PolicyMetadata.load(export)
    assert metadata.link_memory and loaded.link_memory
    assert "link_memory" in loaded.feature_scaling
    assert loaded.n_inputs == len(env.layout.names) + N_MEMORY_FEATURES + env.actions.n_actions
    reference = PredictedActionValues("mpc-quantile", memory=True)
    assert_device_acts_as_trained(run_dir, export, reference)


def test_predicted_value_export_checks_its_forecast(hindsight_export: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(hindsight_export, tmp_path / "export"))
    metadata = PolicyMetadata.load(copy)
    knowledge = metadata.device_knowledge()
    scenario = copy / "forecast" / "scenario.json"
    original = scenario.read_bytes()
    scenario.write_text("{}")
    with pytest.raises(ValueError, match=r"scenario\.json: SHA-256 does not match policy\.json"):
        load_device_features(copy, metadata, knowledge)
    scenario.write_bytes(original)
    assert load_device_features(copy, metadata, knowledge) is not None
    (copy / "forecast" / "tiny.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny\.npz: missing"):
        load_device_features(copy, metadata, knowledge)
    bare = PolicyMetadata(**{**metadata.__dict__, "files": {"policy.onnx": "0"}})
    with pytest.raises(ValueError, match="lists no forecast/ scenario and profile"):
        load_device_features(copy, bare, knowledge)


def test_a_link_forecast_rule_exports_the_forecast_it_acts_on(
    hindsight_run: Path, hindsight_export: Path, tmp_path: Path
) -> None:
    """A policy trained on ``mpc-quantile``'s values carries the link forecast in its export, and
    the device acts on that copy (checked against ``policy.json``), not on the installed one."""
    import dataclasses

    from splitrl.agents.baselines.link_forecast import SHIPPED_FORECAST, shipped_forecast
    from splitrl.agents.features import PredictedActionValues
    from splitrl.runtime.onnx_export import write_forecast
    from splitrl.runtime.segments import file_sha256

    copy = Path(shutil.copytree(hindsight_export, tmp_path / "export"))
    run = RunDirectory(hindsight_run)
    env = run.make_env()
    files = write_forecast(copy, run.scenario(), env.profile, ("mpc-quantile",))
    carried = copy / "forecast" / "link_forecast.npz"
    assert files["forecast/link_forecast.npz"] == file_sha256(SHIPPED_FORECAST)
    assert carried.read_bytes() == SHIPPED_FORECAST.read_bytes()
    metadata = dataclasses.replace(
        PolicyMetadata.load(copy), predicted_values="mpc-quantile", files=files
    )
    other = dataclasses.replace(
        shipped_forecast(),
        biases=(*shipped_forecast().biases[:-1], shipped_forecast().biases[-1] - 3),
    )
    other.save(carried)
    with pytest.raises(ValueError, match=r"link_forecast\.npz: SHA-256 does not match"):
        load_device_features(copy, metadata, env.knowledge)
    metadata = dataclasses.replace(
        metadata, files={**files, "forecast/link_forecast.npz": file_sha256(carried)}
    )
    device = load_device_features(copy, metadata, env.knowledge, env.frame_interval_s)
    assert device is not None
    observation, _ = env.reset(seed=0)
    device.reset()
    on_device = device.extend(observation, env._arrival, env.request_start_s)
    carried_rule, installed_rule = (
        PredictedActionValues("mpc-quantile", other),
        PredictedActionValues("mpc-quantile"),
    )
    for rule in (carried_rule, installed_rule):
        rule.reset(env)
    np.testing.assert_array_equal(on_device, carried_rule.extend(env, observation))
    assert not np.array_equal(on_device, installed_rule.extend(env, observation))
    without = dataclasses.replace(
        metadata,
        files={k: v for k, v in metadata.files.items() if k != "forecast/link_forecast.npz"},
    )
    with pytest.raises(ValueError, match="acts on a link forecast but the export lists no"):
        load_device_features(copy, without, env.knowledge)
    with pytest.raises(ValueError, match="'mpc' acts on no link forecast"):
        PredictedActionValues("mpc", other)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (True, "robust-mpc"),
        (False, None),
        (None, None),
        ("mpc", "mpc"),
        ("robust-mpc", "robust-mpc"),
    ],
)
def test_policy_file_names_its_predictor(
    hindsight_export: Path, tmp_path: Path, written: object, read: str | None
) -> None:
    """``predicted_values`` names the rule; ``true`` (older files) reads as robust-mpc."""
    copy = Path(shutil.copytree(hindsight_export, tmp_path / "export"))
    data = json.loads((copy / "policy.json").read_text())
    (copy / "policy.json").write_text(json.dumps({**data, "predicted_values": written}))
    assert PolicyMetadata.load(copy).predicted_values == read


@pytest.mark.parametrize("written", ["bola", 3])
def test_policy_file_with_an_unknown_predictor_is_refused(
    hindsight_export: Path, tmp_path: Path, written: object
) -> None:
    copy = Path(shutil.copytree(hindsight_export, tmp_path / "export"))
    data = json.loads((copy / "policy.json").read_text())
    (copy / "policy.json").write_text(json.dumps({**data, "predicted_values": written}))
    with pytest.raises(ValueError, match=r"malformed policy metadata.*predict"):
        PolicyMetadata.load(copy)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"context_values": "robust-mpc"}, "must be a list of rules' names"),
        ({"context_values": ["bola"]}, "unknown predictor 'bola'"),
        (
            {"predicted_values": None, "context_values": ["robust-mpc"]},
            "context_values without predicted_values",
        ),
        ({"link_memory": "yes"}, "link_memory must be true or false, got 'yes'"),
        ({"link_memory": 1}, "link_memory must be true or false, got 1"),
        ({"predicted_values": None, "link_memory": True}, "link_memory without predicted_values"),
    ],
)
def test_policy_file_with_bad_context_rules_or_link_memory_is_refused(
    hindsight_export: Path, tmp_path: Path, fields: dict[str, object], match: str
) -> None:
    copy = Path(shutil.copytree(hindsight_export, tmp_path / "export"))
    data = json.loads((copy / "policy.json").read_text())
    data.update(fields)
    (copy / "policy.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        PolicyMetadata.load(copy)


def test_c_export_refuses_a_predicted_value_policy(hindsight_run: Path, tmp_path: Path) -> None:
    from splitrl.runtime.c_export import CExportError, export_c_run

    with pytest.raises(CExportError, match=r"observes mpc's predicted value.*export it as ONNX"):
        export_c_run(hindsight_run, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_device_side_imports_without_torch() -> None:
    code = (
        "import sys; import splitrl.runtime.device, splitrl.runtime.exported_policy, splitrl.runtime.server;"
        "sys.exit(int('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_edited_segment_manifest_is_refused(tmp_path: Path) -> None:
    export_segments(tiny_staged_model(), tmp_path)
    OnnxSegments(tmp_path)  # intact: loads
    manifest_path = tmp_path / "segments.json"
    data = json.loads(manifest_path.read_text())
    data["split_shapes"][1] = [shape + 1 for shape in data["split_shapes"][1]]
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(SegmentError, match="content hash"):
        OnnxSegments(tmp_path)


def test_failed_export_leaves_no_partial_directory(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import splitrl.runtime.onnx_export as onnx_export

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("segment export failed")

    monkeypatch.setattr(onnx_export, "export_segments", fail)
    with pytest.raises(RuntimeError, match="segment export failed"):
        export_run(run_dir, tmp_path / "out", model=tiny_staged_model())
    # the policy was written into the staging folder only: nothing is left beside the run
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "policy.json").write_text("previous export")
    with pytest.raises(RuntimeError, match="segment export failed"):
        export_run(run_dir, existing, model=tiny_staged_model())
    assert (existing / "policy.json").read_text() == "previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["existing", "run"]


def test_clipped_inputs_are_exported_in_the_graph(env: SplitComputingEnv, tmp_path: Path) -> None:
    agent = SACD(
        "MlpPolicy",
        env,
        policy_kwargs={"net_arch": [32, 32], "clip_inputs": True},
        seed=0,
        device="cpu",
    )
    # a narrow recorded range, so that most random observations are clipped
    agent.policy.record_inputs(random_observations(env.layout, 20, seed=3) * 0.2)
    export_env_policy(agent, tmp_path, env)
    observations = random_observations(env.layout, 10_000, seed=4)
    graph = PolicyGraph(agent.policy.actor, env.actions).eval()
    onnx_actions = OnnxPolicy(tmp_path).actions(observations)
    np.testing.assert_array_equal(onnx_actions, torch_actions(graph, observations))
    low = agent.policy.actor.input_low.numpy()
    high = agent.policy.actor.input_high.numpy()
    clipped = np.clip(observations, low, high)
    assert not np.array_equal(clipped, observations)
    np.testing.assert_array_equal(onnx_actions, OnnxPolicy(tmp_path).actions(clipped))


def test_range_guard_is_exported_in_the_graph(env: SplitComputingEnv, tmp_path: Path) -> None:
    from splitrl.agents.learners import link_range_guard

    agent = SACD(
        "MlpPolicy",
        env,
        policy_kwargs={
            "net_arch": [32, 32],
            "clip_inputs": True,
            "range_guard": link_range_guard(env),
        },
        seed=0,
        device="cpu",
    )
    recorded = random_observations(env.layout, 20, seed=3)
    recorded[:, 0] = np.abs(recorded[:, 0]) + 0.1  # the link never below 10**0.3 Mbit/s
    agent.policy.record_inputs(recorded)
    export_env_policy(agent, tmp_path, env)
    observations = random_observations(env.layout, 10_000, seed=4)
    graph = PolicyGraph(agent.policy.actor, env.actions).eval()
    onnx_actions = OnnxPolicy(tmp_path).actions(observations)
    np.testing.assert_array_equal(onnx_actions, torch_actions(graph, observations))
    below = observations[:, 0] < agent.policy.actor.input_low[0].item()
    assert 0 < below.sum() < len(below)
    local = [env.actions.is_device_only(int(e), int(s)) for e, s, _ in onnx_actions]
    assert np.all(np.array(local)[below])
    assert not np.all(local)


def test_policy_file_carries_the_transfer_timeout(
    tiny_profile: Profile, agent: SACD, exported: Path, tmp_path: Path
) -> None:
    """The env's transfer timeout is exported for the device; older files without one wait."""
    timeout_env = SplitComputingEnv(profile=tiny_profile, horizon=20, transfer_timeout_s=0.04)
    assert export_env_policy(agent, tmp_path / "timeout", timeout_env).transfer_timeout_s == 0.04
    assert PolicyMetadata.load(tmp_path / "timeout").transfer_timeout_s == 0.04
    assert PolicyMetadata.load(exported).transfer_timeout_s is None
    copy = Path(shutil.copytree(exported, tmp_path / "old"))
    data = json.loads((copy / "policy.json").read_text())
    del data["transfer_timeout_s"]
    (copy / "policy.json").write_text(json.dumps(data))
    assert PolicyMetadata.load(copy).transfer_timeout_s is None


@pytest.mark.parametrize("written", [0, -1.0, "0.05", True])
def test_policy_file_with_a_bad_transfer_timeout_is_refused(
    exported: Path, tmp_path: Path, written: object
) -> None:
    copy = Path(shutil.copytree(exported, tmp_path / "export"))
    data = json.loads((copy / "policy.json").read_text())
    (copy / "policy.json").write_text(json.dumps({**data, "transfer_timeout_s": written}))
    with pytest.raises(ValueError, match=r"malformed policy metadata.*transfer_timeout_s"):
        PolicyMetadata.load(copy)
