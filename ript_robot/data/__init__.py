"""The Zarr episode store, published policies and the trainer's schedule (see `store`)."""

from ript_robot.data.backend import StoreError
from ript_robot.data.store import EpisodeCorrupt, EpisodeStore, StoredGroup, VerifyReport

__all__ = ["EpisodeCorrupt", "EpisodeStore", "StoreError", "StoredGroup", "VerifyReport"]
