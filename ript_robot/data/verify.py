"""`ript store verify`: every committed episode checked, without trusting what a read happens to return.

A sealed episode (written with an object manifest, `ript_robot.data.integrity`) is checked object
by object: one listing of the store finds missing, added and resized objects, and every object's
sha256 is compared with the manifest, without decoding an array. An episode from before manifests
is read back in full, its row counts checked against its attributes, and its absent chunks named:
it is reported unverifiable, never clean, because an absent chunk there may be damage or all-fill data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from ript_robot.data.index import EpisodeRecord, label_to_dict, meta_from_dict
from ript_robot.data.integrity import GROUP_METADATA, EpisodeCorrupt, listing_problems, object_problem
from ript_robot.data.writer import STEP_ARRAYS

if TYPE_CHECKING:
    from ript_robot.data.store import EpisodeStore


@dataclass
class VerifyReport:
    """What `EpisodeStore.verify` found."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)  # committed episodes that are damaged
    unverifiable: list[str] = field(default_factory=list)  # written before manifests: checked as far as possible
    uncommitted: list[str] = field(default_factory=list)  # left in staging by a crashed writer (invisible)
    unindexed: list[str] = field(default_factory=list)  # promoted but never indexed (invisible)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(
    store: EpisodeStore, progress: Callable[[int, int], None] | None = None, workers: int = 8
) -> VerifyReport:
    """Check every committed episode: a sealed one object by object against its manifest (sizes and
    sha256, one listing of the store), an older one by reading its arrays back in full."""
    store.refresh()
    report = VerifyReport()
    records = store.records(kind=None)
    listed: dict[str, dict[str, int]] = defaultdict(dict)
    for m in store.backend.list("episodes/"):
        episode_id, _, name = m["path"][len("episodes/") :].partition("/")
        listed[episode_id][name] = m["size"]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # object stores: overlap the requests' latency
        for i, record in enumerate(records):
            report.checked += 1
            if record.seal is None:
                problem, note = _check_unsealed(store, record, listed[record.episode_id])
                if note:
                    report.unverifiable.append(note)
            else:
                problem = _check_sealed(store, record, listed[record.episode_id], pool)
            if problem:
                report.problems.append(problem)
            if progress is not None:
                progress(i + 1, len(records))
    report.uncommitted = store.backend.children("staging")
    report.unindexed = sorted(set(store.backend.children("episodes")) - set(store.index.episodes))
    return report


def check_episode(store: EpisodeStore, episode_id: str) -> str | None:
    """Check one committed episode as `verify_store` does (listing its folder alone); None when it is intact.
    An episode from before manifests is checked as far as it can be."""
    record = store.index.episodes[episode_id]
    listed = store.listed(episode_id)
    if record.seal is None:
        return _check_unsealed(store, record, listed)[0]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return _check_sealed(store, record, listed, pool)


def _check_sealed(
    store: EpisodeStore, record: EpisodeRecord, listed: dict[str, int], pool: ThreadPoolExecutor
) -> str | None:
    episode_id = record.episode_id
    try:
        attributes, manifest = store.committed(episode_id)
    except EpisodeCorrupt as exc:
        return str(exc)
    assert manifest is not None
    problems = listing_problems(episode_id, listed, manifest)
    present = sorted(set(manifest) & set(listed))
    folder = f"episodes/{episode_id}/"
    for name, data in zip(present, pool.map(lambda n: store.backend.get(folder + n), present), strict=True):
        if problem := object_problem(manifest[name], data):
            problems.append(f"episode {episode_id}: object '{name}' {problem}")
    mirror = attributes["ript_episode"].get("label")
    if mirror != _label_or_none(record) and mirror != _label_or_none(store.refresh().index.episodes[episode_id]):
        problems.append(f"episode {episode_id}: object '{GROUP_METADATA}' holds a label that the index never gave")
    return "; ".join(problems) or None


def _check_unsealed(store: EpisodeStore, record: EpisodeRecord, listed: dict[str, int]) -> tuple[str | None, str]:
    """An episode from before manifests: (a problem, or None; what could not be verified)."""
    episode_id = record.episode_id
    note = f"episode {episode_id}: written before object manifests; its arrays decode"
    try:
        group = store.open_group(episode_id)
        attrs = group.attrs["ript_episode"]
        if meta_from_dict(attrs).context.context_id != record.meta.context.context_id:
            return f"episode {episode_id}: attributes disagree with the index", note
        names = array_names(group)
        frames = group["frame_steps"].shape[0] if "frame_steps" in names else record.meta.num_steps
        absent = []
        for name in names:
            array = group[name]
            expected = record.meta.num_steps
            if name.startswith("chunk_"):
                expected = len(attrs["chunk_starts"])
            elif name.startswith("images/") or name == "frame_steps":
                expected = frames
            if array.shape[0] != expected:
                return f"episode {episode_id}: '{name}' has {array.shape[0]} rows, expected {expected}", note
            read_array(group, name)
            stored = sum(key.startswith(f"{name}/c/") for key in listed)
            if stored < array.nchunks:
                absent.append(f"'{name}' {array.nchunks - stored} of {array.nchunks}")
    except EpisodeCorrupt as exc:
        return str(exc), note
    except Exception as exc:
        return f"episode {episode_id}: {type(exc).__name__}: {exc}", note
    if absent:
        note += f", but chunks are absent (read as fill values; damage or all-fill data?): {', '.join(absent)}"
    return None, note


def _label_or_none(record: EpisodeRecord) -> dict[str, Any] | None:
    """The label a group's attributes mirror for an index record."""
    return None if record.meta.label is None else label_to_dict(record.meta.label)


def array_names(group: zarr.Group) -> list[str]:
    """Every array of an episode group: the per-step ones, one per camera, and the chunks' if any."""
    names = list(STEP_ARRAYS)
    if "images" in group:
        names += [f"images/{cam}" for cam in sorted(group["images"].array_keys())]
        if "frame_steps" in group:
            names.append("frame_steps")
    if "chunk_actions" in group:
        names += ["chunk_actions", "chunk_log_prob"]
        if "chunk_extras" in group:
            names += [f"chunk_extras/{name}" for name in sorted(group["chunk_extras"].array_keys())]
    if "capture_stamps" in group:
        names.append("capture_stamps")
    return names


def read_array(group: zarr.Group, name: str) -> np.ndarray:
    """Read a whole array; on failure, find and name the damaged chunk."""
    array = group[name]
    assert isinstance(array, zarr.Array)
    try:
        return np.asarray(array[...])
    except EpisodeCorrupt:
        raise
    except Exception as exc:
        rows = array.chunks[0]
        for begin in range(0, array.shape[0], rows):
            try:
                array[begin : begin + rows]
            except Exception as chunk_exc:
                raise EpisodeCorrupt(
                    f"episode {group.path.rsplit('/', 1)[-1]}: '{name}' chunk {begin // rows} "
                    f"(rows {begin}-{min(begin + rows, array.shape[0]) - 1}) is damaged: {chunk_exc}"
                ) from chunk_exc
        raise EpisodeCorrupt(f"episode {group.path}: '{name}' cannot be read: {exc}") from exc
