"""The store's index: an append-only log of commits and labels, kept as episodes commit.

Finding complete groups must not walk every episode group (10,000 of them on object
storage would take minutes), so every commit and every label also appends one row to
the index. Each writing process (a robot, a sim worker, a labeling app) owns its own
log under `index/<session>/`, cut into segments of at most `segment_rows` rows; the
open segment is rewritten whole on each append (an atomic object write), and a full
segment is never touched again. No two processes ever write the same object, so any
number of robots share one store without locks, on a disk or in a bucket.

An episode is committed exactly when its row is in the index: its arrays were promoted
to `episodes/<id>` before the row was written. Labels are rows of their own, so an
operator's label arriving minutes later never rewrites the episode's arrays, and every
label is kept with who gave it and when (the newest one counts).
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ript_robot.data.backend import Backend, StoreError
from ript_robot.types import Context, EpisodeMeta, Label

INDEX_PREFIX = "index"


def label_to_dict(label: Label) -> dict[str, Any]:
    return {
        "success": label.success,
        "source": label.source,
        "confidence": label.confidence,
        "labeler": label.labeler,
        "time": label.time,
        "retracted": label.retracted,
        "suggestion": label.suggestion,
        "discarded": label.discarded,
        "undo_window_s": label.undo_window_s,
    }


def label_from_dict(d: dict[str, Any]) -> Label:
    return Label(
        bool(d["success"]),
        d["source"],
        float(d["confidence"]),
        d.get("labeler", ""),
        float(d["time"]),
        bool(d.get("retracted", False)),  # stores written before undo existed lack these
        d.get("suggestion"),
        bool(d.get("discarded", False)),
        float(d.get("undo_window_s", 0.0)),
    )


def meta_to_dict(meta: EpisodeMeta) -> dict[str, Any]:
    """Episode attributes as plain JSON: the group's zarr attributes and the index row share it."""
    return {
        "episode_id": meta.episode_id,
        "context_id": meta.context.context_id,
        "instruction": meta.context.instruction,
        "seed": meta.context.seed,
        "scene": meta.context.scene,
        "policy_version": meta.policy_version,
        "robot_id": meta.robot_id,
        "start_time": meta.start_time,
        "end_time": meta.end_time,
        "num_steps": meta.num_steps,
        "end_reason": meta.end_reason,
        "kind": meta.kind,
        "sampling": meta.sampling,
        "slot_id": meta.slot_id,
        "interventions": meta.interventions,
        "intervened_steps": meta.intervened_steps,
        "label": None if meta.label is None else label_to_dict(meta.label),
    }


def meta_from_dict(d: dict[str, Any]) -> EpisodeMeta:
    return EpisodeMeta(
        episode_id=d["episode_id"],
        context=Context(d["context_id"], d["instruction"], int(d["seed"]), d["scene"]),
        policy_version=int(d["policy_version"]),
        robot_id=d["robot_id"],
        start_time=float(d["start_time"]),
        end_time=d["end_time"],
        num_steps=int(d["num_steps"]),
        end_reason=d["end_reason"],
        label=None if d.get("label") is None else label_from_dict(d["label"]),
        kind=d.get("kind", "rollout"),
        sampling=d.get("sampling", "none"),  # stores from before provenance: never in a RIPT group
        slot_id=d.get("slot_id"),
        interventions=int(d.get("interventions", 0)),  # stores from before interventions: none
        intervened_steps=int(d.get("intervened_steps", 0)),
    )


@dataclass
class EpisodeRecord:
    """What the index knows about one committed episode; `meta.label` is the newest label (None when it
    was retracted, i.e. undone, or when the episode was discarded)."""

    meta: EpisodeMeta
    committed_at: float
    labels: list[Label] = field(default_factory=list)  # every label given, oldest first
    seal: str | None = None  # sha256 of the committed attributes and object manifest (None: an older store)

    @property
    def episode_id(self) -> str:
        return self.meta.episode_id

    @property
    def reward(self) -> float | None:
        return self.meta.reward_of(self.meta.label)

    @property
    def newest(self) -> Label | None:
        """The newest label row (a retraction or a discard included), None when never labeled."""
        return self.labels[-1] if self.labels else None

    @property
    def discarded(self) -> bool:
        """Whether the newest label row discards the episode (not to be learned from)."""
        return self.newest is not None and self.newest.discarded

    def settled_label(self, now: float) -> Label | None:
        """The label the trainer may use at wall time `now`: the newest row, once its undo window has
        passed, unless it is a retraction or a discard."""
        newest = self.newest
        if newest is None or newest.retracted or newest.discarded or not newest.settled(now):
            return None
        return newest


class IndexWriter:
    """Appends rows to this process's own log; thread-safe."""

    def __init__(self, backend: Backend, session: str | None = None, segment_rows: int = 512):
        """session: unique per writing process (a fresh one by default); segment_rows: rows per segment (>= 1)."""
        if segment_rows < 1:
            raise ValueError(f"segment_rows must be >= 1, got {segment_rows}")
        self.backend = backend
        self.session = session or uuid.uuid4().hex
        self.segment_rows = segment_rows
        self._segment = 0
        self._rows: list[str] = []  # the open segment's rows, each encoded once
        self._lock = threading.Lock()

    def append(self, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._rows) >= self.segment_rows:
                self._segment += 1
                self._rows = []
            self._rows.append(json.dumps(row, separators=(",", ":")))
            path = f"{INDEX_PREFIX}/{self.session}/{self._segment:06d}.json"
            self.backend.put(path, f"[{','.join(self._rows)}]".encode())


@dataclass
class _Segment:
    """One index segment, parsed once: its commits (meta, commit time, label at commit) and label rows."""

    tag: Any
    commits: list[tuple[EpisodeMeta, float, Label | None, str | None]]
    labels: list[tuple[str, Label]]


class Index:
    """The resolved view of every log: committed episodes with their newest labels.

    `refresh()` re-reads only the segments that changed since the last call (full segments
    never change), so a trainer polling the store pays for new rows only.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self._segments: dict[str, _Segment] = {}
        self.episodes: dict[str, EpisodeRecord] = {}

    def refresh(self) -> Index:
        seen, changed = {}, []
        for obj in self.backend.list(INDEX_PREFIX + "/"):
            path = obj["path"]
            if not path.endswith(".json"):
                continue
            seen[path] = (obj.get("e_tag"), obj["size"], obj["last_modified"])
            cached = self._segments.get(path)
            if cached is None or cached.tag != seen[path]:
                changed.append(path)
        with ThreadPoolExecutor(max_workers=8) as pool:  # one request per segment: overlap their latency
            contents = list(pool.map(self.backend.get, changed))
        for path, data in zip(changed, contents, strict=True):
            if data is None:
                continue
            try:
                rows = json.loads(data)
            except json.JSONDecodeError as exc:
                raise StoreError(f"index segment {path} is damaged ({exc}); run `ript store verify`") from exc
            self._segments[path] = _parse(seen[path], rows)
        gone = set(self._segments) - set(seen)
        for path in gone:
            del self._segments[path]
        if changed or gone:
            self._resolve()
        return self

    def _resolve(self) -> None:
        """Join every segment's commits with every label; only changed segments were parsed again."""
        episodes: dict[str, EpisodeRecord] = {}
        labels: list[tuple[str, Label]] = []
        for segment in self._segments.values():
            for meta, committed_at, label, sealed in segment.commits:
                episodes[meta.episode_id] = EpisodeRecord(meta, committed_at, [] if label is None else [label], sealed)
            labels += segment.labels
        for episode_id, label in sorted(labels, key=lambda item: item[1].time):
            record = episodes.get(episode_id)
            if record is not None:
                record.labels.append(label)
        for record in episodes.values():
            record.labels.sort(key=lambda label: label.time)
            newest = record.labels[-1] if record.labels else None
            record.meta.label = None if newest is None or newest.retracted or newest.discarded else newest
        self.episodes = episodes


def _parse(tag: Any, rows: list[dict[str, Any]]) -> _Segment:
    segment = _Segment(tag, [], [])
    for row in rows:
        if row["type"] == "episode":
            meta = meta_from_dict(row["meta"])
            segment.commits.append((meta, row["committed_at"], meta.label, row.get("seal")))
        elif row["type"] == "label":
            segment.labels.append((row["episode_id"], label_from_dict(row["label"])))
    return segment


def episode_row(meta: EpisodeMeta, committed_at: float, seal: str | None = None) -> dict[str, Any]:
    """seal: `integrity.seal` of the committed group (what verifies it later)."""
    return {"type": "episode", "meta": meta_to_dict(meta), "committed_at": committed_at, "seal": seal}


def label_row(episode_id: str, label: Label) -> dict[str, Any]:
    return {"type": "label", "episode_id": episode_id, "label": label_to_dict(label)}
