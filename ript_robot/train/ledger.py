"""The trainer's ledger: the state of every RIPT group it scheduled, from the store alone.

A RIPT group is what the trainer scheduled: K slots of one context at one policy version
(`data.schedule`). Only rollouts that name one of those slots, were sampled (not the mode),
and ran the slot's policy version may fill it; evaluation runs, instruction runs, teleoperation
and imports stay in the store for people and SFT and never enter a group. A group is

- WAITING while fewer than K of its rollouts carry a settled label (an operator's label
  counts once its undo window has passed; a simulator's or detector's at once),
- READY once K do (the first K in slot order),
- USED once an update judged it (its episodes are in a manifest), and
- EXPIRED when its version fell out of the staleness window unused.

A rollout the operator discarded, one that cannot fill its slot, or one whose stored objects failed
their integrity check (damaged: never trained on) leaves a hole that a
replacement slot (same group, current version) fills; a group that then mixes policy
versions is the one documented fallback to same-version groups, counted as `mixed`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from ript_robot.data.index import EpisodeRecord
from ript_robot.data.schedule import Schedule, Slot
from ript_robot.types import Context, Label


def _scheduled_at(slot: Slot) -> int:
    """The version a slot's group was scheduled for: its id's `v<version>` (a replacement runs later)."""
    head = slot.group.split("-", 1)[0]
    return int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else slot.policy_version


class GroupState(enum.Enum):
    WAITING = "waiting"
    READY = "ready"
    USED = "used"
    EXPIRED = "expired"


def fills(record: EpisodeRecord, slot: Slot) -> bool:
    """Whether a committed episode may fill a scheduled slot: a sampled rollout of the slot's version."""
    m = record.meta
    return m.kind == "rollout" and m.sampling == "sampled" and m.policy_version == slot.policy_version


@dataclass
class LedgerGroup:
    """One scheduled group and what the store holds for it."""

    group_id: str
    context: Context
    version: int  # the version it was scheduled for (its replacements may run newer ones)
    slots: list[Slot] = field(default_factory=list)  # originals then replacements, in schedule order
    episodes: dict[str, EpisodeRecord] = field(default_factory=dict)  # slot id -> the episode that ran it
    state: GroupState = GroupState.WAITING
    members: list[EpisodeRecord] = field(default_factory=list)  # READY: the K it is judged on
    holes: list[Slot] = field(default_factory=list)  # discarded or unfit rollouts no replacement covers yet
    unlabeled: int = 0  # committed members still without a settled label

    labels: list[Label] = field(default_factory=list)  # READY: the members' settled labels, judged on
    judged_at: float = 0.0  # when the trainer judged it (wall time)

    @property
    def mixed(self) -> bool:
        return len({r.meta.policy_version for r in self.members}) > 1

    @property
    def corrected(self) -> bool:
        """A person took over in one of its members."""
        return any(r.meta.interventions for r in self.members)

    @property
    def rewards(self) -> list[float]:
        return [float(r.meta.reward_of(label)) for r, label in zip(self.members, self.labels, strict=True)]


class Ledger:
    """The groups scheduled for versions `current - staleness .. current`, resolved at wall time `now`."""

    def __init__(
        self,
        schedule: Schedule,
        records: Iterable[EpisodeRecord],
        current: int,
        staleness: int,
        used: set[str],
        k: int,
        now: float,
        damaged: set[str] = frozenset(),
    ):
        """used: ids of episodes an update (or this iteration) already judged; k: rollouts per group;
        damaged: ids of episodes found damaged (holes, like discarded ones)."""
        self.k, self.now, self.damaged = k, now, damaged
        self.groups: dict[str, LedgerGroup] = {}
        for version in range(max(0, current - staleness), current + 1):
            for slot in schedule.slots(version):
                group = self.groups.get(slot.group)
                if group is None:
                    group = self.groups[slot.group] = LedgerGroup(slot.group, slot.context, _scheduled_at(slot))
                group.slots.append(slot)
        by_slot = {s.slot_id: g for g in self.groups.values() for s in g.slots}
        self.unfit: list[EpisodeRecord] = []  # name a slot they cannot fill (e.g. a deterministic run)
        for record in sorted(records, key=lambda r: r.committed_at):
            group = by_slot.get(record.meta.slot_id or "")
            if group is None or record.meta.slot_id in group.episodes:
                continue
            group.episodes[record.meta.slot_id] = record
        for group in self.groups.values():
            self._resolve(group, current - staleness, used)

    def _resolve(self, group: LedgerGroup, oldest: int, used: set[str]) -> None:
        covered = {s.replaces for s in group.slots if s.replaces}
        settled: list[tuple[EpisodeRecord, Label]] = []
        for slot in group.slots:
            record = group.episodes.get(slot.slot_id)
            if record is None:
                continue
            if record.episode_id in used:
                group.state = GroupState.USED
            if not fills(record, slot):
                self.unfit.append(record)
            elif record.episode_id not in self.damaged and not (record.discarded and record.newest.settled(self.now)):
                label = record.settled_label(self.now)
                if label is None:
                    group.unlabeled += 1
                else:
                    settled.append((record, label))
                continue
            if slot.slot_id not in covered:
                group.holes.append(slot)
        if group.state is GroupState.USED:
            return
        if group.version < oldest:
            group.state = GroupState.EXPIRED
        elif len(settled) >= self.k:
            group.state = GroupState.READY
            group.members, group.labels = (list(t) for t in zip(*settled[: self.k], strict=True))

    def in_state(self, state: GroupState) -> list[LedgerGroup]:
        return [g for g in self.groups.values() if g.state is state]

    def holes(self) -> list[Slot]:
        """Slots of waiting groups to schedule again: their rollout was discarded or cannot fill them."""
        return [s for g in self.in_state(GroupState.WAITING) for s in g.holes]

    def lost(self, claimed: set[str]) -> list[Slot]:
        """Slots of waiting groups that were claimed but never committed and no replacement covers:
        after a stall, their actor is presumed gone."""
        out = []
        for g in self.in_state(GroupState.WAITING):
            covered = {s.replaces for s in g.slots if s.replaces}
            out += [s for s in g.slots if s.slot_id in claimed and s.slot_id not in set(g.episodes) | covered]
        return out

    def backlog(self) -> int:
        """Committed rollouts of waiting groups still without a settled label (the operator's queue)."""
        return sum(g.unlabeled for g in self.in_state(GroupState.WAITING))

    def progress(self) -> tuple[int, int]:
        """Changes whenever a waiting group gets a rollout or a label: what the stall timer watches."""
        waiting = self.in_state(GroupState.WAITING)
        return sum(len(g.episodes) for g in waiting), sum(len(r.labels) for g in waiting for r in g.episodes.values())
