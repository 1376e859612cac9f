"""The watchdog and the cycle timer, on a virtual clock."""

from __future__ import annotations

import logging
import math
import threading

import pytest

from ript_robot.runtime.timing import Backoff, CycleTimer, PeriodicThread, Watchdog


class VirtualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_flags_inputs_older_than_the_limit_and_never_seen_ones():
    clock = VirtualClock()
    dog = Watchdog(["camera/top", "joint_states"], max_age_s=0.1, clock=clock)
    assert set(dog.stale()) == {"camera/top", "joint_states"} and math.isinf(dog.stale()["camera/top"])
    dog.feed("camera/top")
    dog.feed("joint_states")
    clock.now += 0.1
    assert dog.stale() == {}
    clock.now += 0.05
    dog.feed("joint_states")
    assert dog.stale() == {"camera/top": pytest.approx(0.15)}
    with pytest.raises(KeyError, match="unknown input 'wrist'"):
        dog.feed("wrist")
    with pytest.raises(ValueError, match="max_age_s"):
        Watchdog(["a"], max_age_s=0)


def test_cycle_timer_counts_missed_ticks_and_overruns_and_warns(caplog):
    clock = VirtualClock()
    timer = CycleTimer(rate_hz=10.0, clock=clock)
    for _ in range(5):  # on time: 10 ms of work every 100 ms
        timer.start()
        clock.now += 0.01
        timer.stop()
        clock.now += 0.09
    assert timer.missed_ticks == 0 and timer.overruns == 0
    clock.now += 0.2  # two periods without a tick
    with caplog.at_level(logging.WARNING):
        timer.start()
        clock.now += 0.15  # and this tick overruns its period
        timer.stop()
    assert timer.missed_ticks == 2 and timer.overruns == 1
    assert "missed 2 tick(s)" in caplog.text and "cannot keep up" not in caplog.text  # warnings are rate-limited
    stats = timer.stats()
    assert stats["ticks"] == 6 and stats["tick_max_ms"] == pytest.approx(150.0)
    assert stats["tick_p50_ms"] == pytest.approx(10.0)


def test_cycle_timer_pause_does_not_count_idle_time_between_episodes():
    clock = VirtualClock()
    timer = CycleTimer(rate_hz=30.0, clock=clock)
    timer.start()
    timer.stop()
    timer.pause()
    clock.now += 10.0
    timer.start()
    timer.stop()
    assert timer.missed_ticks == 0


def test_a_periodic_thread_skips_the_deadlines_an_overrun_missed_instead_of_bursting():
    clock, calls, done = [0.0], [], threading.Event()
    period = 0.01

    def work():  # on a virtual clock: the first call overruns by 2.5 periods, the others take no time
        calls.append(clock[0])
        if len(calls) == 1:
            clock[0] += 2.5 * period
        if len(calls) == 3:
            done.set()

    loop = PeriodicThread(period, work, clock=lambda: clock[0])
    assert done.wait(timeout=10)
    loop.stop()
    assert loop.skipped == 2  # the deadlines at 1 and 2 periods passed during the overrun
    assert calls[:3] == [0.0, 2.5 * period, 2.5 * period]  # then on the grid again, one call per deadline


def test_backoff_looks_again_soon_after_a_change_and_ever_less_often_while_nothing_changes() -> None:
    slept: list[float] = []
    backoff = Backoff(max_s=0.5, min_s=0.05, sleep=slept.append)
    for _ in range(6):
        backoff.wait()
    assert slept == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.changed()
    backoff.wait()
    assert slept[-1] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="min_s <= max_s"):
        Backoff(max_s=0.01, min_s=0.05)
