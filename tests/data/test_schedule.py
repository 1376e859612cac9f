"""The schedule: actors claim slots with create-only writes, so no slot is ever run twice."""

from __future__ import annotations

import threading
from pathlib import Path

from ript_robot.data.backend import Backend
from ript_robot.data.schedule import Schedule
from ript_robot.types import Context


def contexts(n: int) -> list[Context]:
    return [Context(f"ctx{i}", "pick up the red block", i, "scene") for i in range(n)]


def test_rounds_list_k_slots_per_context_together(tmp_path: Path) -> None:
    schedule = Schedule(Backend(tmp_path))
    first = schedule.write_round(2, contexts(3), 4)
    second = schedule.write_round(2, contexts(1), 4)
    assert [s.context.context_id for s in first] == ["ctx0"] * 4 + ["ctx1"] * 4 + ["ctx2"] * 4
    assert len(second) == 4 and all(s.policy_version == 2 for s in first + second)
    assert len({s.slot_id for s in first + second}) == 16
    assert schedule.slots(2) == first + second and schedule.slots(3) == []
    assert [s.context.context_id for s in schedule.claim(2, "robot", 5)] == ["ctx0"] * 4 + ["ctx1"]


def test_two_actors_racing_never_claim_the_same_slot(store_uri: str) -> None:
    Schedule(Backend(store_uri)).write_round(0, contexts(10), 4)
    claims: dict[str, list[str]] = {"a": [], "b": []}

    def actor(name: str) -> None:
        schedule = Schedule(Backend(store_uri))  # each actor has its own connection
        while slots := schedule.claim(0, name, 3):
            claims[name] += [s.slot_id for s in slots]

    threads = [threading.Thread(target=actor, args=(name,)) for name in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(claims["a"]) & set(claims["b"])
    assert len(claims["a"]) + len(claims["b"]) == 40
    assert claims["a"] and claims["b"]


def test_done_marks_the_end_of_training_and_can_be_reopened(tmp_path: Path) -> None:
    schedule = Schedule(Backend(tmp_path))
    assert not schedule.finished()
    schedule.finish(5)
    assert schedule.finished()
    schedule.reopen()
    assert not schedule.finished()
