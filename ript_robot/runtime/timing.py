"""Timing guards of a real-time control loop: input freshness and the cycle timer.

`Watchdog` holds the arm when any input (a camera, the arm state) is older than its limit:
a stalled camera driver must stop the arm, not let it run on a frozen picture. `CycleTimer`
measures a loop that should tick at a fixed rate, counts the ticks it missed and the ticks
that overran their period, and warns (at most every few seconds) when the loop cannot keep
up. Both take the clock as an argument, so tests drive them with a virtual clock. `PeriodicThread`
runs a control loop's period on a thread of its own, on a fixed grid of deadlines. `WallClock` and
`ScaledClock` give services that wait on people wall time to run on, real or sped up for tests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Watchdog:
    """Tracks when each named input last arrived; `stale()` lists those older than `max_age_s`."""

    def __init__(self, inputs: Iterable[str], max_age_s: float, clock: Clock = time.monotonic):
        """inputs: names of the inputs that must stay fresh; max_age_s: oldest acceptable age (> 0), seconds."""
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0 seconds, got {max_age_s}")
        self.max_age_s = max_age_s
        self.clock = clock
        self._last: dict[str, float | None] = dict.fromkeys(inputs)
        if not self._last:
            raise ValueError("a watchdog needs at least one input to watch")

    def feed(self, name: str, when: float | None = None) -> None:
        """Record that `name` arrived (at `when`, on the watchdog's clock; now by default)."""
        if name not in self._last:
            raise KeyError(f"unknown input {name!r}; watched: {sorted(self._last)}")
        self._last[name] = self.clock() if when is None else when

    def ages(self, now: float | None = None) -> dict[str, float]:
        """Age of every input in seconds (inf for one never seen)."""
        now = self.clock() if now is None else now
        return {k: math.inf if t is None else now - t for k, t in self._last.items()}

    def stale(self, now: float | None = None) -> dict[str, float]:
        """Inputs older than the limit, with their ages; empty when all are fresh."""
        return {k: age for k, age in self.ages(now).items() if age > self.max_age_s}


class CycleTimer:
    """Measures a loop meant to tick every `period_s`: durations, missed ticks, overruns."""

    def __init__(self, rate_hz: float, clock: Clock = time.monotonic, warn_every_s: float = 5.0, window: int = 10_000):
        """rate_hz: intended tick rate (> 0); warn_every_s: least time between two warnings;
        window: recent ticks kept for the percentiles."""
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.period_s = 1.0 / rate_hz
        self.clock = clock
        self.warn_every_s = warn_every_s
        self.ticks = 0
        self.missed_ticks = 0  # periods that passed without a tick
        self.overruns = 0  # ticks whose work took longer than one period
        self.durations: deque[float] = deque(maxlen=window)
        self._start: float | None = None
        self._previous_start: float | None = None
        self._last_warning = -math.inf

    def start(self, now: float | None = None) -> None:
        """Call when a tick begins."""
        now = self.clock() if now is None else now
        if self._previous_start is not None:
            gap = now - self._previous_start
            missed = round(gap / self.period_s) - 1 if gap > 1.5 * self.period_s else 0
            if missed > 0:
                self.missed_ticks += missed
                self._warn(f"control loop missed {missed} tick(s): {gap * 1e3:.1f} ms since the previous tick")
        self._start = self._previous_start = now

    def stop(self, now: float | None = None) -> float:
        """Call when a tick's work is done; returns its duration in seconds."""
        if self._start is None:
            raise RuntimeError("CycleTimer.stop() without start()")
        now = self.clock() if now is None else now
        duration = now - self._start
        self._start = None
        self.ticks += 1
        self.durations.append(duration)
        if duration > self.period_s:
            self.overruns += 1
            self._warn(
                f"control tick took {duration * 1e3:.1f} ms, more than the {self.period_s * 1e3:.1f} ms period: "
                "the loop cannot keep up (a lighter policy, fewer cameras or a lower rate will)"
            )
        return duration

    def pause(self) -> None:
        """Forget the previous tick (between episodes), so idle time is not counted as missed ticks."""
        self._previous_start = None

    def stats(self) -> dict[str, float]:
        """Ticks, missed ticks, overruns and tick-duration percentiles (milliseconds)."""
        d = np.asarray(self.durations) * 1e3 if self.durations else np.zeros(1)
        return {
            "ticks": self.ticks,
            "missed_ticks": self.missed_ticks,
            "overruns": self.overruns,
            "tick_p50_ms": float(np.percentile(d, 50)),
            "tick_p99_ms": float(np.percentile(d, 99)),
            "tick_max_ms": float(d.max()),
        }

    def _warn(self, message: str) -> None:
        now = self.clock()
        if now - self._last_warning >= self.warn_every_s:
            self._last_warning = now
            log.warning(message)


class PeriodicThread:
    """Calls `fn` once per `period_s` on a thread of its own, on a fixed grid of deadlines.

    An executor's timer shares its thread with every other callback of the process; this thread
    only sleeps until its next deadline. A call that overruns skips the deadlines it missed (they
    are counted in `skipped`) instead of bursting to catch up. `stop` ends it after the current call.
    """

    def __init__(self, period_s: float, fn: Callable[[], None], name: str = "control", clock: Clock = time.monotonic):
        """period_s: seconds between calls (> 0); fn: the work of one period (exceptions are logged, never raised)."""
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0 seconds, got {period_s}")
        self.period_s, self.fn, self.clock = period_s, fn, clock
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = self.clock()
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:  # the loop must outlive a failing period; the caller's fn reports its own errors
                log.exception("periodic call failed")
            deadline += self.period_s
            now = self.clock()
            if now > deadline:  # overran: skip to the next deadline still ahead
                missed = math.floor((now - deadline) / self.period_s) + 1
                self.skipped += missed
                deadline += missed * self.period_s
            self._stop.wait(deadline - now)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class Backoff:
    """The wait between looks at something other processes change (a store's index, a schedule): `min_s` right
    after a change, doubling while nothing changes, up to `max_s`. A trainer or an actor so notices new work
    within tens of milliseconds while work flows, and looks at most every `max_s` (a request each, on S3)
    while it does not."""

    def __init__(self, max_s: float, min_s: float = 0.05, sleep: Callable[[float], None] = time.sleep):
        """max_s >= min_s > 0, seconds; sleep: how to wait (a virtual clock's in tests)."""
        if not 0 < min_s <= max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got min_s={min_s}, max_s={max_s}")
        self.min_s, self.max_s, self._sleep = min_s, max_s, sleep
        self.delay = min_s

    def changed(self) -> None:
        """Something changed: the next wait is the shortest."""
        self.delay = self.min_s

    def wait(self) -> None:
        self._sleep(self.delay)
        self.delay = min(self.max_s, 2 * self.delay)


class WallClock:
    """Wall time and sleeping, as services that wait on people (the trainer, a labeling desk) use them."""

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ScaledClock(WallClock):
    """Wall time that runs `factor` times faster than real time from its creation, and sleeps that much
    shorter: tests and benchmarks of processes that wait minutes for people run in seconds. It never
    reads earlier than the real wall clock, so stamps taken from either still order correctly."""

    def __init__(self, factor: float):
        """factor: virtual seconds per real second (>= 1)."""
        if not factor >= 1.0:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor
        self._origin = time.time()

    def time(self) -> float:
        return self._origin + (time.time() - self._origin) * self.factor

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.factor)
