"""The episode store: the one channel between robots (or sim workers) and the trainer.

Robots commit episodes through an `EpisodeWriter`; labels arrive later through
`add_label`; the trainer reads the index's records (its ledger decides which fill the
groups it scheduled, `ript_robot.train.ledger`) and then their arrays. `complete_groups`
is the plain view for people and tools: K labeled rollouts of one context, any provenance. Everything lives under one
root, a local directory or an S3-compatible bucket prefix:

    ript_store.json        format marker
    zarr.json              root zarr group, so `zarr.open_group(root)` works
    episodes/<id>/         committed episodes (see `ript_robot.data.writer` for the arrays)
    staging/<id>/          episodes being written (never read)
    index/<session>/*.json append-only logs of commits and labels (see `ript_robot.data.index`)
    policies/, schedule/   published policies and the trainer's schedule
"""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsArrayError, ContainsGroupError

from ript_robot.data.arrays import decode
from ript_robot.data.backend import Backend, StoreError
from ript_robot.data.index import EpisodeRecord, Index, IndexWriter, label_row, label_to_dict
from ript_robot.data.integrity import (
    GROUP_METADATA,
    MANIFEST_ATTR,
    EpisodeCorrupt,
    VerifyingStore,
    check_object,
    listing_problems,
    seal,
)
from ript_robot.data.verify import VerifyReport, array_names, read_array, verify_store
from ript_robot.data.writer import EpisodeWriter
from ript_robot.types import ActionChunk, Context, Episode, Label, Observation, StepRecord

FORMAT = 1
MARKER = "ript_store.json"


@dataclass
class StoredGroup:
    """K committed, labeled rollouts of one context, as the index describes them."""

    context: Context
    records: list[EpisodeRecord]

    @property
    def rewards(self) -> list[float | None]:
        return [r.reward for r in self.records]


class EpisodeStore:
    """Open (or create) a store at a local path or s3://bucket/prefix."""

    def __init__(self, uri: str | Path, create: bool = True, options: dict[str, Any] | None = None):
        self.backend = Backend(uri, options)
        self.uri = self.backend.uri
        marker = self.backend.get_json(MARKER)
        if marker is None:
            if not create:
                raise StoreError(
                    f"{self.uri} is not a ript-robot store (no {MARKER}); "
                    "`ript train`, `ript actor` and `ript store import` create one"
                )
            self._create_layout()
            self.backend.create(MARKER, f'{{"format": {FORMAT}, "created": {time.time()}}}'.encode())
        elif marker.get("format") != FORMAT:
            raise StoreError(f"{self.uri} has store format {marker.get('format')}; this ript-robot reads {FORMAT}")
        self.index = Index(self.backend)
        self._index_writer: IndexWriter | None = None

    def _create_layout(self, attempts: int = 5) -> None:
        """The root group and `episodes/`, so `zarr.open_group(root)["episodes"][id]` works.

        A trainer and its actors often start together on an empty folder or bucket: when another
        process creates a node between zarr's check and its write, open what it made instead."""
        for attempt in range(attempts):
            try:
                root = zarr.open_group(self.backend.zarr, mode="a")
                root.attrs.update({"ript_store": {"format": FORMAT}})
                root.require_group("episodes")
                return
            except (ContainsGroupError, ContainsArrayError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    @property
    def index_writer(self) -> IndexWriter:
        """This process's log in the index (created on first use)."""
        if self._index_writer is None:
            self._index_writer = IndexWriter(self.backend)
        return self._index_writer

    def writer(self, **options: Any) -> EpisodeWriter:
        """A background episode writer; options go to `EpisodeWriter` (chunk_frames, compressor...)."""
        return EpisodeWriter(self, **options)

    def write_episode(self, episode: Episode, writer: EpisodeWriter | None = None) -> str:
        """Store an episode held in memory (imports, tests) and return its id.

        Without `writer` it is committed (and the index refreshed) when this returns; with a
        shared writer it is committed once that writer is flushed.
        """
        own = writer is None
        w = writer or self.writer()
        w.begin(episode.meta)
        sent = 0
        for record in episode.steps:
            while sent < len(episode.chunks) and sent <= record.chunk_index:
                planned = episode.chunk_observations[sent]
                step = next((r.step for r in episode.steps if r.observation is planned), None)
                w.add_chunk(episode.meta.episode_id, episode.chunks[sent], planned, step)
                sent += 1
            w.add_step(episode.meta.episode_id, record)
        w.end(episode.meta, episode.final)
        if own:
            w.close()
            if w.failures:
                raise StoreError(w.failures[0])
            self.refresh()
        return episode.meta.episode_id

    # --- reading ---

    def refresh(self) -> EpisodeStore:
        """Pick up commits and labels written since the last call."""
        self.index.refresh()
        return self

    def records(self, kind: str | None = "rollout") -> list[EpisodeRecord]:
        """Committed episodes (of one kind, or all with kind=None), oldest commit first."""
        records = [r for r in self.index.episodes.values() if kind is None or r.meta.kind == kind]
        return sorted(records, key=lambda r: r.committed_at)

    def complete_groups(
        self,
        rollouts_per_context: int,
        min_version: int | None = None,
        max_version: int | None = None,
        exclude: Iterable[str] = (),
        contexts: Iterable[str] | None = None,
    ) -> list[StoredGroup]:
        """Groups of K labeled rollouts of one context, from policy versions in [min, max].

        A context with 2K eligible episodes gives two groups; leftovers wait for more. Episodes
        in `exclude` (already used) are skipped; `contexts` restricts to those context ids.
        """
        skip = set(exclude)
        wanted = None if contexts is None else set(contexts)
        by_context: dict[str, list[EpisodeRecord]] = defaultdict(list)
        for record in self.records():
            m = record.meta
            if record.episode_id in skip or m.label is None:
                continue
            if (min_version is not None and m.policy_version < min_version) or (
                max_version is not None and m.policy_version > max_version
            ):
                continue
            if wanted is not None and m.context.context_id not in wanted:
                continue
            by_context[m.context.context_id].append(record)
        k = rollouts_per_context
        groups = []
        for records in by_context.values():
            for begin in range(0, len(records) - k + 1, k):
                groups.append(StoredGroup(records[begin].meta.context, records[begin : begin + k]))
        return groups

    def committed(self, episode_id: str) -> tuple[dict[str, Any], dict[str, list[Any]] | None]:
        """The group's attributes and, for a sealed episode, its object manifest (checked against the
        index's seal); raises EpisodeCorrupt when the group metadata is missing or not as committed."""
        folder = f"episodes/{episode_id}"
        try:
            raw = self.backend.get_json(f"{folder}/{GROUP_METADATA}")
        except StoreError as exc:
            raise EpisodeCorrupt(f"episode {episode_id}: object '{GROUP_METADATA}' is damaged: {exc}") from exc
        if raw is None:
            raise EpisodeCorrupt(
                f"episode {episode_id}: object '{GROUP_METADATA}' is missing (the index has the episode, "
                f"{folder} has no group)"
            )
        attributes = raw.get("attributes") if isinstance(raw, dict) else None
        if not isinstance(attributes, dict) or not isinstance(attributes.get("ript_episode"), dict):
            raise EpisodeCorrupt(f"episode {episode_id}: object '{GROUP_METADATA}' lost the episode's attributes")
        record = self.index.episodes.get(episode_id)
        sealed = None if record is None else record.seal
        manifest = attributes.get(MANIFEST_ATTR)
        if sealed is None:
            return attributes, None  # written before manifests: nothing to check against
        if not isinstance(manifest, dict) or seal(attributes["ript_episode"], manifest) != sealed:
            raise EpisodeCorrupt(
                f"episode {episode_id}: object '{GROUP_METADATA}' holds attributes or a manifest "
                "that differ from what was committed (the index's seal)"
            )
        return attributes, manifest

    def open_group(self, episode_id: str, listing: bool = False) -> zarr.Group:
        """The episode's group; a sealed one reads through a `VerifyingStore` (every object it reads is checked),
        and with `listing` its folder is listed first (missing, extra and resized objects)."""
        _, manifest = self.committed(episode_id)
        folder = f"episodes/{episode_id}"
        store = self.backend.zarr
        if manifest is not None:
            if listing and (problems := listing_problems(episode_id, self.listed(episode_id), manifest)):
                raise EpisodeCorrupt("; ".join(problems))
            store = VerifyingStore(self.backend.zarr, episode_id, folder, manifest)
        try:
            return zarr.open_group(store, path=folder, mode="r")
        except EpisodeCorrupt:
            raise
        except Exception as exc:
            raise EpisodeCorrupt(f"episode {episode_id}: its group cannot be opened: {exc}") from exc

    def listed(self, episode_id: str) -> dict[str, int]:
        """The objects in an episode's folder: {key relative to the folder: size}."""
        folder = f"episodes/{episode_id}/"
        return {m["path"][len(folder) :]: m["size"] for m in self.backend.list(folder)}

    def read_episode(self, episode_id: str) -> Episode:
        """Load a committed episode's arrays into an `Episode` (raises EpisodeCorrupt when damaged)."""
        record = self.index.episodes.get(episode_id)
        if record is None:
            raise StoreError(f"no committed episode {episode_id} in {self.uri}")
        attributes, manifest = self.committed(episode_id)
        attrs = dict(attributes["ript_episode"])
        arrays = None if manifest is None else self._decode_arrays(episode_id, manifest)
        if arrays is None:  # an episode from before manifests, or arrays in a layout only zarr reads
            group = self.open_group(episode_id, listing=True)
            try:
                arrays = {name: read_array(group, name) for name in array_names(group)}
            except EpisodeCorrupt:
                raise
            except Exception as exc:
                raise EpisodeCorrupt(f"episode {episode_id} cannot be read: {type(exc).__name__}: {exc}") from exc
        meta = record.meta
        starts = list(attrs.get("chunk_starts", []))
        clipped = set(attrs.get("safety_clipped_steps", []))
        # stores from before the split: every clipped step counts as limited (never credited)
        limited = set(attrs.get("safety_limited_steps", clipped))
        intervened = set(attrs.get("intervened", []))
        stamp_inputs = list(attrs.get("capture_stamp_inputs", []))
        num_steps = len(arrays["state"])
        chunk_of_step = np.searchsorted(np.asarray(starts), np.arange(num_steps), side="right") - 1
        steps = []
        images = {name.removeprefix("images/"): a for name, a in arrays.items() if name.startswith("images/")}
        # stores written before frame_steps existed kept a frame of every step
        kept = arrays.get("frame_steps", np.arange(num_steps))
        frame_of_step = {int(t): f for f, t in enumerate(kept)} if images else {}
        for t in range(num_steps):
            frame = frame_of_step.get(t)
            obs = Observation(
                {} if frame is None else {cam: frames[frame] for cam, frames in images.items()},
                arrays["state"][t],
                meta.context.instruction,
                float(arrays["timestamps"][t]),
                dict(zip(stamp_inputs, map(float, arrays["capture_stamps"][t]), strict=True)) if stamp_inputs else {},
            )
            chunk = int(chunk_of_step[t]) if starts else 0
            steps.append(
                StepRecord(
                    t,
                    float(arrays["timestamps"][t]),
                    obs,
                    arrays["actions"][t],
                    chunk,
                    t in clipped,
                    t in limited,
                    t in intervened,
                )
            )
        extras = {n.removeprefix("chunk_extras/"): a for n, a in arrays.items() if n.startswith("chunk_extras/")}
        chunks = [
            ActionChunk(
                arrays["chunk_actions"][c],
                arrays["chunk_log_prob"][c],
                meta.policy_version,
                {name: values[c] for name, values in extras.items()},
            )
            for c in range(len(starts))
        ]
        planned_from = attrs.get("chunk_observation_steps", starts)  # stores from before planning ahead: the starts
        return Episode(meta, steps, chunks, [steps[s].observation for s in planned_from])

    def _decode_arrays(self, episode_id: str, manifest: dict[str, list[Any]]) -> dict[str, np.ndarray] | None:
        """Every array of a sealed episode, each object checked against the manifest and decoded in this process
        (`ript_robot.data.arrays`); None when an array is in a layout left to zarr."""
        if problems := listing_problems(episode_id, self.listed(episode_id), manifest):
            raise EpisodeCorrupt("; ".join(problems))
        folder = f"episodes/{episode_id}/"

        def get(key: str) -> bytes | None:  # an object the manifest lists, checked; None for one it does not
            if key not in manifest:
                return None  # a chunk zarr skipped as all fill value (episodes written through zarr)
            data = self.backend.get(folder + key)
            check_object(episode_id, manifest, key, data)
            return data

        arrays = {}
        for name in sorted(k.removesuffix(f"/{GROUP_METADATA}") for k in manifest if k.endswith(f"/{GROUP_METADATA}")):
            metadata = json.loads(get(f"{name}/{GROUP_METADATA}") or b"{}")
            if metadata.get("node_type") != "array":
                continue
            try:
                array = decode(metadata, lambda chunk, name=name: get(f"{name}/{chunk}"))
            except ValueError as exc:
                raise EpisodeCorrupt(f"episode {episode_id}: '{name}' is damaged: {exc}") from exc
            if array is None:
                return None
            arrays[name] = array
        return arrays

    def cameras(self, episode_id: str) -> list[str]:
        """The names of the cameras an episode kept frames of, sorted."""
        return _camera_names(self.open_group(episode_id))

    def key_frames(
        self, episode_id: str, count: int, camera: str | None = None, last: bool = False
    ) -> list[np.ndarray]:
        """`count` (>= 1) frames of one camera (default: the first by name), spread evenly from the
        episode's first kept frame to its last (the final scene, when kept), or with `last` its
        final `count` frames; reads only the chunks that hold them."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        group = self.open_group(episode_id)  # once: opening a sealed episode reads and checks its metadata
        cameras = _camera_names(group)
        if not cameras:
            return []
        name = camera or cameras[0]
        if name not in cameras:
            raise StoreError(f"episode {episode_id} has no camera {name!r}; it has {cameras}")
        array = group[f"images/{name}"]
        n = array.shape[0]
        if n == 0:
            return []
        if last:
            rows = list(range(max(0, n - count), n))
        else:
            rows = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
        try:
            return [np.asarray(array[r]) for r in rows]
        except Exception as exc:
            raise EpisodeCorrupt(f"episode {episode_id}: frames of '{name}' cannot be read: {exc}") from exc

    def read_episodes(self, episode_ids: Iterable[str]) -> list[Episode]:
        """Load several episodes; a damaged one is skipped with a warning naming it."""
        episodes = []
        for episode_id in episode_ids:
            try:
                episodes.append(self.read_episode(episode_id))
            except EpisodeCorrupt as exc:
                warnings.warn(f"skipping {exc}; run `ript store verify {self.uri}`", stacklevel=2)
        return episodes

    # --- labels ---

    def add_label(self, episode_id: str, label: Label) -> None:
        """Attach a label to a committed episode, keeping earlier ones; its arrays are not touched.

        The label goes to the index (what the trainer reads), and the episode group's
        attributes are updated too, so a plain zarr reader sees the newest label.
        """
        if episode_id not in self.index.episodes:
            self.refresh()
        record = self.index.episodes.get(episode_id)
        if record is None:
            raise StoreError(f"cannot label {episode_id}: no committed episode with that id in {self.uri}")
        ended = record.meta.end_time
        if ended is not None and label.time < ended:
            raise StoreError(
                f"cannot label {episode_id}: the label's time ({label.time:.3f}) is before the episode ended "
                f"({ended:.3f}); check the labeling host's clock (NTP) and label it again"
            )
        self.index_writer.append(label_row(episode_id, label))
        group = zarr.open_group(self.backend.zarr, path=f"episodes/{episode_id}", mode="r+")
        attrs = dict(group.attrs["ript_episode"])
        attrs["label"] = None if label.retracted or label.discarded else label_to_dict(label)
        group.attrs.update({"ript_episode": attrs})
        self.refresh()

    # --- integrity ---

    def verify(self, progress: Callable[[int, int], None] | None = None, workers: int = 8) -> VerifyReport:
        """Check every committed episode (`ript_robot.data.verify`); progress(done, total) after each."""
        return verify_store(self, progress, workers)

    def info(self) -> dict[str, Any]:
        """Counts for `ript store info`: episodes, contexts, labels, success per policy version."""
        self.refresh()
        records = self.records(kind=None)
        per_version: dict[int, list[float]] = defaultdict(list)
        unlabeled = 0
        for r in records:
            if r.meta.kind != "rollout":
                continue
            if r.reward is None:
                unlabeled += 1
            else:
                per_version[r.meta.policy_version].append(r.reward)
        waiting = [  # scheduled, sampled rollouts the trainer waits on: the operator's queue
            r
            for r in records
            if r.meta.slot_id and r.meta.sampling == "sampled" and r.reward is None and not r.discarded
        ]
        oldest = min((r.meta.end_time or r.committed_at for r in waiting), default=None)
        sources: dict[str, int] = defaultdict(int)
        for r in records:
            if r.meta.label is not None:
                sources[r.meta.label.source] += 1
        return {
            "uri": self.uri,
            "episodes": len(records),
            "rollouts": sum(r.meta.kind == "rollout" for r in records),
            "demonstrations": sum(r.meta.kind == "demonstration" for r in records),
            "contexts": len({r.meta.context.context_id for r in records}),
            "robots": sorted({r.meta.robot_id for r in records}),
            "unlabeled_rollouts": unlabeled,
            "label_backlog": len(waiting),
            "label_backlog_oldest_s": None if oldest is None else round(time.time() - oldest, 1),
            "discarded": sum(r.discarded for r in records),
            "label_sources": dict(sources),
            "success_per_version": {
                v: {"episodes": len(rs), "success": float(np.mean(rs))} for v, rs in sorted(per_version.items())
            },
        }


def _camera_names(group: zarr.Group) -> list[str]:
    return sorted(group["images"].array_keys()) if "images" in group else []
