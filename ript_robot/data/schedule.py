"""The trainer's schedule: which contexts to roll out next, K each, and who runs which.

For each policy version the trainer writes rounds of work, `schedule/v<version>/r<n>.json`,
each a list of slots (one rollout of one context). Actors claim slots with create-only
writes (`claims/<slot>`): on a disk and on S3 alike exactly one writer can create an
object, so two actors never run the same slot, with no lock server. The K slots of a
context are listed together, so an actor that claims a batch gets whole groups; each slot
names its group, and a slot scheduled in place of a discarded or lost rollout names the
slot it replaces and joins that group. Every rollout records its slot, so the trainer
learns only from the work it scheduled.
`schedule/done.json` tells actors the trainer has finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from ript_robot.data.backend import Backend
from ript_robot.types import Context

DONE = "schedule/done.json"


@dataclass(frozen=True)
class Slot:
    """One scheduled rollout; the K slots of a `group` (plus any replacements) form one RIPT group."""

    slot_id: str
    policy_version: int
    context: Context
    group: str  # `v<version>-r<round>-g<index>` of the round that scheduled the group
    replaces: str | None = None  # the slot whose rollout this one replaces (discarded, or lost with its actor)


def _folder(version: int) -> str:
    return f"schedule/v{version:06d}"


class Schedule:
    """Read and write the schedule of a store."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._rounds: dict[str, list[Slot]] = {}  # round files never change once written

    def rounds(self, version: int) -> list[list[Slot]]:
        """Every round written for a policy version, in order."""
        out = []
        for obj in sorted(self.backend.list(_folder(version) + "/"), key=lambda o: o["path"]):
            path = obj["path"]
            if "/claims/" in path or not path.endswith(".json"):
                continue
            if path not in self._rounds:
                data = self.backend.get_json(path)
                self._rounds[path] = [
                    Slot(
                        s["slot"],
                        version,
                        Context(s["context_id"], s["instruction"], s["seed"], s["scene"]),
                        s.get("group", s["slot"]),  # schedules from before groups were named: one slot each
                        s.get("replaces"),
                    )
                    for s in data["slots"]
                ]
            out.append(self._rounds[path])
        return out

    def slots(self, version: int) -> list[Slot]:
        return [slot for r in self.rounds(version) for slot in r]

    def write_round(self, version: int, contexts: list[Context], rollouts_per_context: int) -> list[Slot]:
        """Schedule a group of K rollouts of each context for `version`; returns the new slots."""
        return self._write(
            version,
            lambda prefix: [
                Slot(f"{prefix}-{i * rollouts_per_context + k:05d}", version, c, f"{prefix}-g{i:03d}")
                for i, c in enumerate(contexts)
                for k in range(rollouts_per_context)
            ],
        )

    def write_replacements(self, version: int, replaced: list[Slot]) -> list[Slot]:
        """Schedule, for `version`, one rollout in place of each slot in `replaced`, in the same group."""
        return self._write(
            version,
            lambda prefix: [
                Slot(f"{prefix}-{i:05d}", version, s.context, s.group, s.slot_id) for i, s in enumerate(replaced)
            ],
        )

    def _write(self, version: int, make: Callable[[str], list[Slot]]) -> list[Slot]:
        """Write the next round of `version` with the slots `make(prefix)` names (prefix `v<version>-r<round>`)."""
        n = len(self.rounds(version)) + 1
        while True:
            slots = make(f"v{version:06d}-r{n:03d}")
            rows = [
                {
                    "slot": s.slot_id,
                    "context_id": s.context.context_id,
                    "instruction": s.context.instruction,
                    "seed": s.context.seed,
                    "scene": s.context.scene,
                    "group": s.group,
                    "replaces": s.replaces,
                }
                for s in slots
            ]
            path = f"{_folder(version)}/r{n:03d}.json"
            body = json.dumps({"policy_version": version, "round": n, "created": time.time(), "slots": rows})
            if self.backend.create(path, body.encode()):
                self._rounds[path] = slots
                return slots
            n += 1  # another trainer wrote this round first: take the next number

    def claimed(self, version: int) -> set[str]:
        prefix = f"{_folder(version)}/claims/"
        return {obj["path"][len(prefix) :] for obj in self.backend.list(prefix)}

    def claim(self, version: int, actor_id: str, n: int) -> list[Slot]:
        """Claim up to n unclaimed slots of `version`, in schedule order."""
        taken = self.claimed(version)
        won: list[Slot] = []
        for slot in self.slots(version):
            if len(won) >= n:
                break
            if slot.slot_id in taken:
                continue
            claim = json.dumps({"actor": actor_id, "time": time.time()}).encode()
            if self.backend.create(f"{_folder(version)}/claims/{slot.slot_id}", claim):
                won.append(slot)
        return won

    def finish(self, final_version: int) -> None:
        self.backend.put_json(DONE, {"final_version": final_version, "time": time.time()})

    def finished(self) -> bool:
        return self.backend.get(DONE) is not None

    def reopen(self) -> None:
        """Clear the done marker (a trainer resumed to train further)."""
        self.backend.delete_prefix(DONE)
