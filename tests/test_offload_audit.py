"""The offload audit: a policy's gain over a rule, split into its offloads and the requests after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splitrl.agents.baselines import make_baseline
from splitrl.agents.baselines.backlog import best_rows_at_waits
from splitrl.agents.policy_interface import Policy
from splitrl.agents.rollout import LOCAL_BITS
from splitrl.cli import main
from splitrl.envs.split_computing import SplitComputingEnv
from splitrl.evaluation.offload_audit import OffloadsReplaced, audit_offloads, is_offload

HORIZON = 30
SEEDS = [11, 12, 13]


@pytest.fixture
def tiny_env(tiny_profile_path: Path) -> SplitComputingEnv:
    return SplitComputingEnv(profile=str(tiny_profile_path), horizon=HORIZON)


def test_offloads_are_valued_as_the_steps_rewarded_them(tiny_env: SplitComputingEnv) -> None:
    audit = audit_offloads(
        make_baseline("random", seed=3), make_baseline("device-only"), tiny_env, SEEDS
    )
    offloaded = audit.policy.bits != LOCAL_BITS
    assert 0 < offloaded.mean() < 1  # both kinds of decision are audited
    np.testing.assert_array_equal(audit.offloads, offloaded.sum(axis=1))
    assert audit.offload_share == pytest.approx(offloaded.mean())
    # the hindsight value of each offload is the reward its step gave
    np.testing.assert_allclose(
        audit.offloaded_reward, (audit.policy.reward * offloaded).sum(axis=1) / HORIZON
    )
    assert not np.allclose(audit.fallback_reward, audit.offloaded_reward)
    # the parts add up to the gain, and the replaced run never offloads
    parts = audit.local_decisions + audit.on_offloads + audit.after_offloads
    np.testing.assert_allclose(parts, audit.total)
    assert (audit.replaced.bits == LOCAL_BITS).all()
    assert audit.policy.seeds == audit.fallback.seeds == audit.replaced.seeds == tuple(SEEDS)
    table = audit.table()
    for component in audit.components():
        assert f"| {component.label} | {component.mean:+.4f} | ± {component.ci95:.4f} |" in table


@pytest.mark.parametrize(
    ("policy", "share", "nil", "whole"),
    [
        ("device-only-first-exit", 0.0, "from_offloads", "local_decisions"),
        ("edge-only", 1.0, "local_decisions", "from_offloads"),
    ],
)
def test_a_policy_that_never_or_always_offloads_gains_from_one_part(
    tiny_env: SplitComputingEnv, policy: str, share: float, nil: str, whole: str
) -> None:
    audit = audit_offloads(make_baseline(policy), make_baseline("device-only"), tiny_env, SEEDS)
    assert audit.offload_share == share
    np.testing.assert_array_equal(getattr(audit, nil), 0.0)
    np.testing.assert_allclose(getattr(audit, whole), audit.total)
    assert np.all(audit.total != 0.0)  # both earn another reward than the fallback
    assert f"{policy} against device-only, 3 episodes; offloads {share:.1%}" in audit.table()


class Alternating:
    """Offloads (as ``edge-only``) on even requests, stays on the device at the first exit on odd."""

    name = "alternating"

    def __init__(self) -> None:
        self.offload, self.local = (
            make_baseline("edge-only"),
            make_baseline("device-only-first-exit"),
        )
        self.step = 0

    def reset(self, env: SplitComputingEnv) -> None:
        self.step = 0

    def act(self, env: SplitComputingEnv, observation: np.ndarray) -> np.ndarray:
        self.step += 1
        chosen = self.offload if self.step % 2 else self.local
        return chosen.act(env, observation)


def test_replaced_offloads_go_to_the_fallback_and_local_decisions_stay(
    tiny_env: SplitComputingEnv,
) -> None:
    local, fallback = make_baseline("device-only-first-exit"), make_baseline("device-only")
    replaced = OffloadsReplaced(Alternating(), fallback)
    assert replaced.name == "alternating (offloads to device-only)"
    observation, _ = tiny_env.reset(seed=5)
    replaced.reset(tiny_env)
    for step in range(1, HORIZON + 1):
        expected = (fallback if step % 2 else local).act(tiny_env, observation)
        np.testing.assert_array_equal(replaced.act(tiny_env, observation), expected)
        observation, *_ = tiny_env.step(expected)
    assert not np.array_equal(
        local.act(tiny_env, observation), fallback.act(tiny_env, observation)
    )  # the two kinds of request were told apart


@pytest.mark.parametrize(
    ("seeds", "message"), [([1], "at least 2 episodes"), ([1, 2], "another policy")]
)
def test_bad_arguments_are_refused(
    tiny_env: SplitComputingEnv, seeds: list[int], message: str
) -> None:
    policy = make_baseline("greedy")
    fallback = policy if message == "another policy" else make_baseline("device-only")
    with pytest.raises(ValueError, match=message):
        audit_offloads(policy, fallback, tiny_env, seeds)


def test_the_command_prints_and_writes_the_audit(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.json"
    arguments = [str(tiny_run), "--episodes", "2", "--fallback", "device-only"]
    assert main(["audit-offloads", *arguments, "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "against device-only, 2 episodes" in printed
    report = json.loads(out.read_text())
    assert report["fallback"] == "device-only"
    assert report["replayed_after"]["horizon"] == 64  # the training's hindsight horizon
    assert report["replayed_after"]["rechoose"] is False
    assert report["seeds"] == [report["seeds"][0], report["seeds"][0] + 1]
    parts = report["components"]
    total = parts["total gain over the fallback"]["mean"]
    assert total == pytest.approx(
        parts["local decisions alone (offloads to the fallback)"]["mean"]
        + parts["from the offloads"]["mean"]
    )
    rechosen = tmp_path / "rechosen.json"
    assert main(["audit-offloads", *arguments, "--replay-rechoose", "--json", str(rechosen)]) == 0
    again = json.loads(rechosen.read_text())
    assert again["replayed_after"]["rechoose"] is True
    assert again["components"] == parts  # the measured parts do not depend on the replays


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--fallback", "psychic"], "unknown fallback 'psychic'"),
        (["--json", "/no/such/folder/audit.json"], "folder /no/such/folder for --json"),
        (["--trace", "/no/such/trace.csv"], "trace file /no/such/trace.csv not found"),
        (["--replay-horizon", "0"], "--replay-horizon must be at least 1, got 0"),
        (["--branch-rate", "1.5"], "--branch-rate must be in [0, 1], got 1.5"),
    ],
)
def test_bad_input_is_one_clear_line(
    tiny_run: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit-offloads", str(tiny_run), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("splitrl audit-offloads: error: ")
    assert message in error
    assert len(error.strip().splitlines()) == 1


def replayed_credit_over_one_request(
    env: SplitComputingEnv,
    policy: Alternating,
    fallback: Policy,
    seeds: list[int],
    rechoose: bool = False,
) -> np.ndarray:
    """The replays of a one-request horizon, by hand: what the fallback's device-free time would
    have changed on the request after each offload, served with the action then taken (or, with
    ``rechoose``, with the lookahead rule's choice after the later wait where that differs from
    its choice after the actual one)."""
    credits = []
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        policy.reset(env)
        credit, pending = 0.0, None
        for _ in range(HORIZON):
            action = policy.act(env, observation)
            instead = fallback.act(env, observation)
            start = env.request_start_s
            if pending is not None:
                served = action
                if rechoose:
                    predicted = env.predict_actions()
                    arrival = start - predicted.wait_s
                    later, actual = best_rows_at_waits(
                        predicted,
                        env.frame_interval_s,
                        env.reward_spec,
                        np.array([pending - arrival, start - arrival]),
                    )
                    served = action if later == actual else predicted.actions[later]
                credit += (
                    env.evaluate_action_from(action, start)[0]
                    - env.evaluate_action_from(served, pending)[0]
                )
                pending = None
            if is_offload(env, action):
                free = env.evaluate_action_from(action, start)[1]
                free_instead = env.evaluate_action_from(instead, start)[1]
                pending = free_instead if free_instead != free else None
            observation, *_ = env.step(action)
        credits.append(credit / HORIZON)
    return np.array(credits)


def test_the_replays_price_the_requests_after_each_offload_with_the_actions_taken(
    tiny_profile_path: Path,
) -> None:
    # requests arrive faster than the device serves them, so a later start carries over
    env = SplitComputingEnv(profile=str(tiny_profile_path), horizon=HORIZON, frame_interval_s=0.002)
    fallback = make_baseline("device-only")
    audit = audit_offloads(Alternating(), fallback, env, SEEDS, replay_horizon=1)
    expected = replayed_credit_over_one_request(env, Alternating(), fallback, SEEDS)
    assert np.any(expected != 0.0)  # some later start changed a reward
    np.testing.assert_allclose(audit.replayed_after, expected)
    assert audit.replay_horizon == 1
    # longer replays charge more requests, and the credit is beside the parts, not one of them
    longer = audit_offloads(Alternating(), fallback, env, SEEDS, replay_horizon=8)
    assert not np.allclose(longer.replayed_after, audit.replayed_after)
    np.testing.assert_allclose(longer.after_offloads, audit.after_offloads)
    for replayed in audit.replayed_components():
        assert (
            f"| {replayed.label} | {replayed.mean:+.4f} | ± {replayed.ci95:.4f} |" in audit.table()
        )
    np.testing.assert_allclose(audit.replay_error, audit.replayed_after - audit.after_offloads)
    report = audit.to_dict()["replayed_after"]
    assert report["horizon"] == 1  # type: ignore[index]
    assert report["credit"]["mean"] == pytest.approx(audit.replayed_after.mean())  # type: ignore[index]


def test_rechosen_replays_serve_the_rules_choice_where_the_later_wait_changes_it() -> None:
    # the shipped profile, where a later start changes the rule's choice (not the tiny one's)
    env = SplitComputingEnv("default", horizon=HORIZON)
    fallback = make_baseline("device-only")
    fixed = audit_offloads(Alternating(), fallback, env, SEEDS, replay_horizon=1)
    rechosen = audit_offloads(
        Alternating(), fallback, env, SEEDS, replay_horizon=1, replay_rechoose=True
    )
    expected = replayed_credit_over_one_request(env, Alternating(), fallback, SEEDS, True)
    np.testing.assert_allclose(rechosen.replayed_after, expected)
    # the later wait changed some choice, and only the credit, not the measured parts
    assert not np.allclose(rechosen.replayed_after, fixed.replayed_after)
    np.testing.assert_allclose(rechosen.after_offloads, fixed.after_offloads)
    assert rechosen.to_dict()["replayed_after"]["rechoose"] is True  # type: ignore[index]
    assert fixed.to_dict()["replayed_after"]["rechoose"] is False  # type: ignore[index]


def test_no_replay_runs_where_the_device_is_free_again_by_the_next_request(
    tiny_profile_path: Path,
) -> None:
    env = SplitComputingEnv(profile=str(tiny_profile_path), horizon=HORIZON, frame_interval_s=5.0)
    audit = audit_offloads(Alternating(), make_baseline("device-only"), env, SEEDS)
    assert audit.offload_share == 0.5
    np.testing.assert_array_equal(audit.replayed_after, 0.0)


@pytest.mark.parametrize("replay_horizon", [1, 6])
def test_a_policy_blind_to_the_state_gets_its_replay_credits_in_the_closed_loop(
    tiny_profile_path: Path, replay_horizon: int
) -> None:
    """Measured one at a time in the closed loop, an offload's effect after it is its replay
    credit when the later actions do not depend on the state (they are then the replays' own)."""
    env = SplitComputingEnv(profile=str(tiny_profile_path), horizon=HORIZON, frame_interval_s=0.002)
    fallback = make_baseline("device-only")
    audit = audit_offloads(
        Alternating(), fallback, env, SEEDS, replay_horizon=replay_horizon, branch_rate=1.0
    )
    assert len(audit.branches) == audit.offloads.sum()  # every offload was measured
    after, credit, own = audit.branches.T
    assert np.any(after != 0.0)
    np.testing.assert_allclose(after, credit, atol=1e-9)
    # the credits of the measured offloads are all the replays' credit
    np.testing.assert_allclose(credit.sum() / HORIZON, audit.replayed_after.sum())
    np.testing.assert_allclose(own.sum() / HORIZON, audit.on_offloads.sum(), atol=1e-9)
    assert audit.branch_correlation == pytest.approx(1.0)
    assert "offloads measured in the closed loop" in audit.table()
    report = audit.to_dict()["branches"]
    assert report["count"] == len(audit.branches)  # type: ignore[index]
    # none measured by default, and a sample of them at a lower rate
    assert len(audit_offloads(Alternating(), fallback, env, SEEDS).branches) == 0
    sampled = audit_offloads(Alternating(), fallback, env, SEEDS, branch_rate=0.3)
    assert 0 < len(sampled.branches) < len(audit.branches)
    with pytest.raises(ValueError, match="branch rate must be in"):
        audit_offloads(Alternating(), fallback, env, SEEDS, branch_rate=-0.1)
