"""`ript store` and `ript actor` from the command line, as a lab engineer uses them."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from conftest import tiny_policy
from synthetic import synthetic_episode
from test_rosbag import TOPICS, default_streams, write_bag

from ript_robot.cli import main as ript
from ript_robot.data import EpisodeStore
from ript_robot.data.schedule import Schedule
from ript_robot.envs.pick import make_contexts
from ript_robot.policies.published import publish_policy


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    store = EpisodeStore(tmp_path / "store")
    for i in range(3):
        store.write_episode(synthetic_episode(f"ctx{i}", steps=12, success=i != 1, seed=i))
    return store


def test_info_and_list_show_episodes_labels_and_success_per_version(
    store: EpisodeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ript(["store", "info", "--store", store.uri]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 3 and info["contexts"] == 3 and info["label_sources"] == {"sim": 3}
    assert info["success_per_version"]["0"] == {"episodes": 3, "success": pytest.approx(2 / 3)}
    assert info["label_backlog"] == 0 and info["label_backlog_oldest_s"] is None
    waiting = synthetic_episode("ctx0", steps=4, success=None, seed=9)
    waiting.meta.slot_id, waiting.meta.sampling = "v000000-r001-00000", "sampled"
    store.write_episode(waiting)
    evaluation = synthetic_episode("ctx0", steps=4, success=None, seed=10)  # unscheduled: nobody waits on it
    store.write_episode(evaluation)
    assert ript(["store", "info", "--store", store.uri]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["label_backlog"] == 1 and info["label_backlog_oldest_s"] >= 0.0 and info["unlabeled_rollouts"] == 2
    assert ript(["store", "list", "--store", store.uri]) == 0
    listing = capsys.readouterr().out
    assert all(r.episode_id in listing for r in store.records()) and listing.count("failure (sim)") == 1


def test_verify_exits_nonzero_and_names_a_damaged_episode(
    store: EpisodeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ript(["store", "verify", "--store", store.uri]) == 0
    victim = store.records()[0].episode_id
    chunk = Path(store.uri) / "episodes" / victim / "state" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3] + b"abc")
    assert ript(["store", "verify", "--store", store.uri]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED  episode {victim}: object 'state/c/0/0' does not match" in out and "1 damaged" in out


def test_export_writes_a_video_of_the_episode(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "store")
    episode = synthetic_episode(steps=12, image_size=32)
    ramp = np.arange(32, dtype=np.uint8)[None, :, None] * 6
    for t, step in enumerate(episode.steps):  # smooth frames a video codec keeps: a ramp drifting with t
        step.observation.images["top"] = np.broadcast_to(ramp + np.uint8(8 * t), (32, 32, 3)).copy()
    store.write_episode(episode)
    out = tmp_path / "review.mp4"
    assert (
        ript(["store", "export", "--store", store.uri, "--episode", episode.meta.episode_id[:8], "--out", str(out)])
        == 0
    )
    with av.open(str(out)) as video:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in video.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (32, 32, 3)
    for t in (0, 5, 11):
        assert np.abs(frames[t] - episode.steps[t].observation.images["top"]).mean() < 4


def test_store_commands_on_a_missing_store_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ript(["store", "info", "--store", str(tmp_path / "nowhere")]) == 2
    assert "not a ript-robot store" in capsys.readouterr().err


def test_import_turns_a_teleoperation_bag_into_a_demonstration(
    store: EpisodeStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "teleop", default_streams())
    topics = tmp_path / "topics.yaml"
    topics.write_text(yaml.safe_dump(TOPICS.model_dump()))
    args = ["store", "import", "--store", store.uri, "--bag", str(bag), "--topics", str(topics)]
    assert ript([*args, "--instruction", "pick up the red block"]) == 0
    (demo,) = store.refresh().records(kind="demonstration")
    assert demo.meta.context.instruction == "pick up the red block" and demo.meta.label.source == "operator"
    topics.write_text(yaml.safe_dump({**TOPICS.model_dump(), "command": "/nope"}))
    assert ript([*args, "--instruction", "x"]) == 2
    assert "/nope" in capsys.readouterr().err


def test_the_actor_claims_scheduled_slots_and_commits_them_with_the_policy_version(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "store")
    policy = tiny_policy()
    policy.version = 3
    publish_policy(store.backend, policy)
    schedule = Schedule(store.backend)
    schedule.write_round(3, make_contexts("workcell", range(2))[:3], rollouts_per_context=4)
    overrides = ["task.image_size=32", "task.max_steps=10", "runtime.execute_steps=4", "actor.max_envs=5"]
    overrides.append("actor.robot_id=arm-1")
    assert ript(["actor", "--store", store.uri, "--max-episodes", "10", "--quiet", *overrides]) == 0
    records = store.refresh().records()
    assert len(records) == 10 and len(schedule.claimed(3)) == 10
    assert all(r.meta.policy_version == 3 and r.meta.robot_id == "arm-1" for r in records)
    assert all(r.meta.label is not None and r.meta.label.source == "sim" for r in records)
    assert [g.context.context_id for g in store.complete_groups(4)] == [
        c.context_id for c in make_contexts("workcell", range(2))[:2]
    ]
    assert store.verify().ok


def test_an_actor_whose_runtime_does_not_fit_the_published_policy_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = EpisodeStore(tmp_path / "store")
    publish_policy(store.backend, tiny_policy())  # chunks of 4 actions
    args = ["actor", "--store", store.uri, "--max-episodes", "1", "--quiet", "task.image_size=32"]
    assert ript([*args, "runtime.execute_steps=8"]) == 2
    assert "execute_steps (8)" in capsys.readouterr().err
