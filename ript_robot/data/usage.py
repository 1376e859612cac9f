"""Which published update used which episode, and with which label: the trainer's record of use.

Every manifest of a published policy lists the episodes its update trained on and those it
judged uniform (`trained_on`, `rejected`) and, since labels can change after the fact, the
label each was judged with, that label's time and when it was judged (`labels_used`).
`TrainingUse` reads them once per version (manifests never change), so the trainer can report
a correction of an episode it already learned from, and the tablet can tell the operator which
version used the old label: a correction is kept and reported, never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ript_robot.data.backend import Backend
from ript_robot.data.checkpoints import latest_version, published_versions, read_manifest
from ript_robot.data.index import EpisodeRecord
from ript_robot.types import CheckpointError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Use:
    """One episode's use by an update."""

    version: int  # the policy version the update published
    trained: bool  # in the PPO batch (False: its group was judged uniform, no signal)
    success: bool | None  # the label it was used with (None in manifests from before labels_used)


class TrainingUse:
    """Episode id -> `Use`, from the store's manifests (read once per version)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.uses: dict[str, Use] = {}
        self._read: set[int] = set()
        self.damaged: dict[int, str] = {}  # versions whose manifest cannot be read (tried again on each refresh)

    def refresh(self) -> TrainingUse:
        """Read the manifests published since the last call; a damaged one is logged and skipped, never raised."""
        try:
            latest = latest_version(self.backend)  # the commit point: a version above it may lack its manifest yet
        except CheckpointError as exc:
            log.warning("training use not refreshed: %s", exc)
            return self
        for version in published_versions(self.backend):
            if version in self._read or latest is None or version > latest:
                continue
            try:
                manifest = read_manifest(self.backend, version)
            except CheckpointError as exc:
                if self.damaged.get(version) != str(exc):
                    log.warning("training use of v%d unknown: %s", version, exc)
                self.damaged[version] = str(exc)
                continue
            self.damaged.pop(version, None)
            labels = manifest.get("labels_used", {})
            for key, trained in (("trained_on", True), ("rejected", False)):
                for episode_id in manifest.get(key, []):
                    used = labels.get(episode_id)
                    success = used.get("success") if isinstance(used, dict) else used  # or a bare bool
                    self.uses[episode_id] = Use(version, trained, success)
            self._read.add(version)
        return self

    def correction(self, record: EpisodeRecord) -> str:
        """'' unless the episode's newest label row differs from the label an update used it with;
        then what changed, e.g. 'used as success by v3, now failure'."""
        use = self.uses.get(record.episode_id)
        newest = record.newest
        if use is None or use.success is None or newest is None:
            return ""
        now = "undone" if newest.retracted else "discarded" if newest.discarded else _word(newest.success)
        if now == _word(use.success):
            return ""
        return f"used as {_word(use.success)} by v{use.version}, now {now}"


def _word(success: bool) -> str:
    return "success" if success else "failure"
