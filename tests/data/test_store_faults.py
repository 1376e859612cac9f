"""Faults a fleet meets: a robot killed mid-episode, two robots writing at once, on disk and on S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from synthetic import subprocess_env

from ript_robot.data import EpisodeStore

WORKER = str(Path(__file__).with_name("store_worker.py"))


def start_worker(uri: str, robot: str, n: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, uri, robot, str(n), *flags],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


def wait_for(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdout is not None
    for out in proc.stdout:
        if out.strip() == line:
            return
    raise AssertionError(f"worker exited ({proc.wait()}) before printing {line}")


def test_a_writer_killed_mid_episode_leaves_every_committed_episode_intact(store_uri: str) -> None:
    proc = start_worker(store_uri, "robot-a", 5, "--hang")
    wait_for(proc, "COMMITTED")
    wait_for(proc, "STREAMING")  # half an episode is in staging now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = EpisodeStore(store_uri, create=False)
    report = store.verify()
    assert report.ok, report.problems
    assert report.checked == 5
    assert len(report.uncommitted) == 1  # the partial episode: left in staging, invisible
    records = store.records()
    assert len(records) == 5 and all(r.meta.context.context_id != "ctx-partial" for r in records)
    assert all(len(e.steps) == 9 for e in store.read_episodes(r.episode_id for r in records))


def test_two_robots_write_to_one_store_at_once(store_uri: str) -> None:
    EpisodeStore(store_uri)  # created once, as a lab would before starting its robots
    procs = [start_worker(store_uri, f"robot-{name}", 12) for name in "ab"]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    store = EpisodeStore(store_uri, create=False)
    records = store.refresh().records()
    assert len(records) == 24
    assert {r.meta.robot_id for r in records} == {"robot-a", "robot-b"}
    assert len({r.episode_id for r in records}) == 24
    assert store.verify().ok
    assert len(store.complete_groups(8)) == 3  # 8 of each context, from both robots


def test_robots_and_a_trainer_creating_one_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    """`ript train` and its actors are often started together on an empty folder or bucket."""
    uri = tmp_path / "store"
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            EpisodeStore(uri, create=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert EpisodeStore(uri, create=False).verify().ok


def test_writers_trainers_and_actors_killed_at_random_points_lose_nothing_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from kill_drill import kill_trials

    result = kill_trials({"writer": 3, "trainer": 1, "actor": 1}, tmp_path, seed=1)
    assert result["kills"] == 5 and result["episodes_committed_in_kill_trials"] > 0
    assert result["committed_lost"] == 0 and result["committed_partial"] == 0, result["kill_problems"]
