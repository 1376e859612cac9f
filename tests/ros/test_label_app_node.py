"""The label_app and detector nodes over DDS, beside the policy node and a sim bridge acting as a bare arm."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import make_env, tiny_policy
from rclpy.node import Node
from ript_ros.policy_node import RELIABLE
from rosutil import ros_context, spinning, wait_for
from std_msgs.msg import Float64
from test_nodes import as_cli, policy_parameters, run_until_committed, sim_parameters

from ript_robot.data import EpisodeStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tablet_starts_watches_and_labels_an_arm_episode_through_the_policy_node(tmp_path: Path) -> None:
    store_uri = tmp_path / "store"
    checkpoint = tiny_policy(seed=3).save(tmp_path / "policy")
    port = free_port()
    policy = policy_parameters(
        checkpoint, store_uri, max_steps=20, context_source="instruction", scene="workcell", autostart=True
    )
    # like a real arm: the bridge lays out each context but neither presses start nor knows success
    sim = sim_parameters(auto_start=False, report_outcome=False, instruction="pick up the red block")
    app = {
        "store.uri": str(store_uri),
        "app.port": port,
        "app.host": "127.0.0.1",
        "topics.image_topic": "camera/{camera}/image_raw",
    }
    processes = [
        subprocess.Popen([sys.executable, "-m", "ript_ros.sim_bridge_node", *as_cli(sim)]),
        subprocess.Popen([sys.executable, "-m", "ript_ros.policy_node", *as_cli(policy)]),
        subprocess.Popen(
            [sys.executable, "-m", "ript_ros.label_app_node", *as_cli(app)], stderr=subprocess.PIPE, text=True
        ),
    ]
    codes: list[str] = []

    def read_codes() -> None:  # what the workstation's screen shows
        for line in processes[2].stderr:
            sys.stderr.write(line)
            if match := re.search(r"enter (\d{3}) (\d{3})", line):
                codes.append(match[1] + match[2])

    threading.Thread(target=read_codes, daemon=True).start()
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
        code = wait_for(lambda: codes and codes[-1], timeout=60, what="the pairing code in the log")
        reply = wait_for(lambda: _try(lambda: client.post("/api/pair", json={"code": code, "name": "arm-tablet"})), 30)
        csrf = {"X-CSRF-Token": reply.json()["csrf"]}

        def robot(state: str):
            status = client.get("/api/state").json()["robot"]
            return status if status and status["state"] == state else None

        ready = wait_for(lambda: robot("ready"), timeout=60, what="the policy node ready with a context")
        assert ready["context"]["instruction"] == "pick up the red block"
        # an operator presses again when the arm's inputs were a moment stale (a loaded machine)
        started = wait_for(lambda: _try(lambda: client.post("/api/robot/start", headers=csrf)), 10, "a start")
        assert started.json()["ok"], started.text
        live = wait_for(lambda: _try(lambda: client.get("/api/live.jpg")), timeout=10, what="a live frame")
        assert live.headers["content-type"] == "image/jpeg" and live.content[:2] == b"\xff\xd8"

        def queued():
            queue = client.get("/api/state").json()["queue"]
            return queue[0] if queue else None

        item = wait_for(queued, timeout=30, what="the ended episode in the tablet's queue")
        assert item["end_reason"] == "max steps" and item["steps"] >= 20 and item["label"] is None
        labeled = client.post(
            f"/api/episodes/{item['episode_id']}/label", json={"success": True, "revision": 0}, headers=csrf
        )
        assert labeled.status_code == 200, labeled.text
        record = EpisodeStore(store_uri).refresh().index.episodes[item["episode_id"]]
        assert record.meta.label.source == "operator" and record.meta.label.labeler == "arm-tablet"
        stopped = client.post("/api/robot/software_stop", json={"engage": True}, headers=csrf)
        assert stopped.status_code == 200
        wait_for(lambda: robot("stopped"), timeout=10, what="the software stop engaged on the policy node")
    finally:
        for p in reversed(processes):
            p.send_signal(signal.SIGINT)
        exits = [p.wait(timeout=30) for p in processes]
    assert exits == [0, 0, 0]


def _try(request):
    try:
        response = request()
    except httpx.TransportError:
        return None  # not listening yet
    return response if response.status_code == 200 else None


@pytest.mark.learning
def test_the_detector_node_judges_arm_episodes_and_labels_only_what_it_is_sure_of(
    tmp_path: Path, trained_detector
) -> None:
    """Like a real arm nobody reports success: the detector node judges the final frame at the step limit."""
    detector, report = trained_detector
    folder = detector.save(tmp_path / "detector", report)
    store_uri = tmp_path / "store"
    checkpoint = tiny_policy(seed=3).save(tmp_path / "policy")
    policy = policy_parameters(
        checkpoint,
        store_uri,
        max_steps=20,
        outcome_grace_s=1.0,
        context_source="instruction",
        scene="workcell",
        label_source="detector",
        autostart=True,
    )
    sim = sim_parameters(report_outcome=False, instruction="pick up the red block")
    judge = {"detector.checkpoint": str(folder), "detector.mode": "auto", "every_n_frames": 2}
    store = EpisodeStore(store_uri, create=True)
    nodes = [
        ("ript_ros.sim_bridge_node", as_cli(sim)),
        ("ript_ros.policy_node", as_cli(policy)),
        ("ript_ros.detector_node", as_cli(judge)),
    ]
    with ros_context() as context:
        ears = Node("ears", context=context)
        judged: list[float] = []
        ears.create_subscription(Float64, "/detector/success_probability", lambda m: judged.append(m.data), RELIABLE)
        with spinning(context, ears):
            records = run_until_committed(nodes, store, 6, timeout=90)
    # every episode is judged while it runs (every 2nd frame) and at its step limit
    assert len(judged) >= len(records) * 5 and all(0.0 <= p <= 1.0 for p in judged)
    labeled = [r for r in records if r.meta.label is not None]
    for record in labeled:  # the ones it was sure of: labeled as the simulator would have
        assert record.meta.label.source == "detector"
        env = make_env(max_steps=20)  # the simulator's verdict: replay the stored commands until it ended
        env.reset(record.meta.context)
        results = [env.step(step.action) for step in store.read_episode(record.episode_id).steps]
        verdict = next((r.success for r in results if r.done), False)
        assert record.meta.label.success == bool(verdict), record.meta.end_reason
