"""What object stores do to episodes, as reproducible faults: for drills, tests and the integrity benchmark.

A partial copy between disks or buckets, a lifecycle rule, a person tidying up, a flaky disk:
each loses, cuts, alters, swaps or adds objects in an episode's folder. `Damage` is one such
change, `random_damage` draws one, and `snapshot`/`restore` put an episode back as it was, so a
drill can damage a real store (a local directory or a bucket) and leave it intact afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import obstore

from ript_robot.data.backend import Backend

KINDS = ("delete", "truncate", "extend", "flip", "replace", "swap", "add")
STRAY_NAMES = ("state/c/7/0", "images/top/c/9/0/0/0", "notes.txt", "extra/zarr.json")  # objects a copy may add


@dataclass(frozen=True)
class Damage:
    """One change to an episode's objects; `names` are the objects it touches (relative to the folder)."""

    kind: str  # one of KINDS
    names: tuple[str, ...]  # swap: two names; add: a name not in the episode
    position: float = 0.0  # truncate/flip: where in the object, as a fraction [0, 1] of its length
    bit: int = 0  # flip: which bit (0..7) of that byte
    data: bytes = b"\0"  # replace/add: the new bytes; extend: the bytes appended

    def apply(self, backend: Backend, folder: str, originals: dict[str, bytes]) -> None:
        """Damage the episode at `folder` (ending in '/') whose objects were `originals` ({name: bytes})."""
        path = folder + self.names[0]
        old = originals.get(self.names[0], b"")
        at = min(int(self.position * len(old)), max(len(old) - 1, 0))
        if self.kind == "delete":
            obstore.delete(backend.objects, path)
        elif self.kind == "truncate":
            backend.put(path, old[:at])
        elif self.kind == "extend":
            backend.put(path, old + self.data)
        elif self.kind == "flip":
            backend.put(path, old[:at] + bytes([old[at] ^ (1 << self.bit)]) + old[at + 1 :])
        elif self.kind in ("replace", "add"):
            backend.put(path, self.data)
        elif self.kind == "swap":
            backend.put(path, originals[self.names[1]])
            backend.put(folder + self.names[1], old)
        else:
            raise ValueError(f"unknown damage kind {self.kind!r}; use one of {KINDS}")

    def changes(self, originals: dict[str, bytes]) -> bool:
        """Whether the bytes differ afterwards (swapping equal objects or rewriting the same bytes does not)."""
        if self.kind == "swap":
            return originals[self.names[0]] != originals[self.names[1]]
        if self.kind == "replace":
            return originals[self.names[0]] != self.data
        return True


def random_damage(rng: np.random.Generator, originals: dict[str, bytes]) -> Damage:
    """A damage drawn uniformly over KINDS, then over the episode's objects and positions."""
    names = sorted(originals)
    kind = str(rng.choice(KINDS))
    data = rng.bytes(int(rng.integers(1, 65)))
    if kind == "add":
        return Damage(kind, (str(rng.choice(STRAY_NAMES)),), data=data)
    if kind == "swap":
        first, second = rng.choice(len(names), size=2, replace=False)
        return Damage(kind, (names[first], names[second]))
    return Damage(kind, (str(rng.choice(names)),), float(rng.random()), int(rng.integers(8)), data)


def snapshot(backend: Backend, folder: str) -> dict[str, bytes]:
    """Every object under `folder` (ending in '/'): {name relative to it: bytes}."""
    found = {m["path"][len(folder) :]: backend.get(m["path"]) for m in backend.list(folder)}
    return {name: data for name, data in found.items() if data is not None}


def restore(backend: Backend, folder: str, originals: dict[str, bytes]) -> None:
    """Put the folder back as `snapshot` saw it: added objects removed, the others rewritten."""
    for name in set(snapshot(backend, folder)) - set(originals):
        obstore.delete(backend.objects, folder + name)
    for name, data in originals.items():
        backend.put(folder + name, data)
