"""The trainer's schedule: which contexts to roll out next, K each, and who runs which.

For each policy version the trainer writes rounds of work, `schedule/v<version>/r<n>.json`,
each a list of slots (one rollout of one context). Actors claim slots with create-only
writes (`claims/<slot>`): on a disk and on S3 alike exactly one writer can create an
object, so two actors never run the same slot, with no lock server. The K slots of a
context are listed together, so an actor that claims a batch gets whole groups.
`schedule/done.json` tells actors the trainer has finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ript_robot.data.backend import Backend
from ript_robot.types import Context

DONE = "schedule/done.json"


@dataclass(frozen=True)
class Slot:
    """One scheduled rollout."""

    slot_id: str
    policy_version: int
    context: Context


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
                    Slot(s["slot"], version, Context(s["context_id"], s["instruction"], s["seed"], s["scene"]))
                    for s in data["slots"]
                ]
            out.append(self._rounds[path])
        return out

    def slots(self, version: int) -> list[Slot]:
        return [slot for r in self.rounds(version) for slot in r]

    def write_round(self, version: int, contexts: list[Context], rollouts_per_context: int) -> list[Slot]:
        """Schedule K rollouts of each context for `version`; returns the new slots."""
        n = len(self.rounds(version)) + 1
        while True:
            slots = [
                Slot(f"v{version:06d}-r{n:03d}-{i * rollouts_per_context + k:05d}", version, c)
                for i, c in enumerate(contexts)
                for k in range(rollouts_per_context)
            ]
            rows = [
                {
                    "slot": s.slot_id,
                    "context_id": s.context.context_id,
                    "instruction": s.context.instruction,
                    "seed": s.context.seed,
                    "scene": s.context.scene,
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
