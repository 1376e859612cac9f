"""Every committed episode knows what it holds: the object manifest, recorded at commit, checked on read.

Zarr reads an absent chunk as its fill value, and a chunk replaced by another valid one passes
its own CRC32C: neither damage shows on a plain read. So the writer records, as it writes, every
object of the episode's folder with its size and sha256, and commits that list
in the group's attributes (`ript_manifest`, readable with plain zarr). The episode's committed
attributes and this list are sealed by one sha256 in the episode's index row, so an edit to
either is seen too. Readers open episodes through a `VerifyingStore`: a missing, extra, truncated,
altered or swapped object raises `EpisodeCorrupt` naming the object, before a byte of it is used
(`object_problem`; zarr reads go through a `VerifyingStore`).

The group's own `zarr.json` is outside the list (labels update its `label` attribute, a mirror of
the index); the seal covers everything else it holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from ript_robot.data.backend import StoreError

MANIFEST_ATTR = "ript_manifest"
GROUP_METADATA = "zarr.json"


class EpisodeCorrupt(StoreError):
    """An episode's objects or arrays are not what was committed; the message names the episode and the object."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(attrs: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The sha256 of an episode's committed attributes (all but the label mirror) and its object list."""
    fixed = {k: v for k, v in attrs.items() if k != "label"}
    return digest(json.dumps({"attrs": fixed, "objects": manifest}, sort_keys=True, separators=(",", ":")).encode())


class VerifyingStore(WrapperStore[Store]):
    """Read-only view of one episode folder whose objects must match `manifest` ({relative key: [bytes, sha256]})."""

    def __init__(self, store: Store, episode_id: str, folder: str, manifest: dict[str, list[Any]]):
        super().__init__(store)
        self.episode_id, self.folder, self.manifest = episode_id, folder.rstrip("/") + "/", manifest

    def _with_store(self, store: Store) -> VerifyingStore:
        return VerifyingStore(store, self.episode_id, self.folder, self.manifest)

    def check(self, key: str, data: bytes | None) -> None:
        """Raise EpisodeCorrupt unless `data` (None: absent) is what the manifest lists for `key`."""
        if not key.startswith(self.folder):
            return
        name = key[len(self.folder) :]
        if name != GROUP_METADATA:
            check_object(self.episode_id, self.manifest, name, data)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        whole = await self._store.get(key, prototype)
        self.check(key, None if whole is None else whole.to_bytes())
        if whole is None or byte_range is None:
            return whole
        return await self._store.get(key, prototype, byte_range)

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


def check_object(episode_id: str, manifest: dict[str, list[Any]], name: str, data: bytes | None) -> None:
    """Raise EpisodeCorrupt naming the object unless `data` (None: absent) is what `manifest` lists for `name`."""
    if problem := object_problem(manifest.get(name), data):
        raise EpisodeCorrupt(f"episode {episode_id}: object '{name}' {problem}")


def object_problem(expected: list[Any] | None, data: bytes | None) -> str | None:
    """What is wrong with one object's bytes (None: absent) against its manifest entry (None: not listed)."""
    problem = _size_problem(expected, None if data is None else len(data))
    if problem is None and expected is not None and data is not None and digest(data) != expected[1]:
        return "does not match its committed sha256 (altered or swapped)"
    return problem


def _size_problem(expected: list[Any] | None, size: int | None) -> str | None:
    if expected is None:
        return None if size is None else "is not in the episode's manifest (added after the commit)"
    if size is None:
        return f"is missing (committed with {expected[0]} bytes)"
    if size != expected[0]:
        return f"has {size} bytes, committed with {expected[0]} (truncated or extended)"
    return None


def listing_problems(episode_id: str, listed: dict[str, int], manifest: dict[str, list[Any]]) -> list[str]:
    """Missing, extra and resized objects, from a listing of the folder ({relative key: size})."""
    names = sorted((set(manifest) | set(listed)) - {GROUP_METADATA})
    found = ((name, _size_problem(manifest.get(name), listed.get(name))) for name in names)
    return [f"episode {episode_id}: object '{name}' {problem}" for name, problem in found if problem]
