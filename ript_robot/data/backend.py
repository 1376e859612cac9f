"""Where a store's bytes live: a local directory or S3-compatible object storage.

Everything the store writes goes through one `Backend`, which holds two views of the same
root: an obstore store for small objects (index segments, labels, manifests, schedule
claims, policy weights) and a zarr store for the episode arrays. Both are libraries'
own stores (zarr's `LocalStore`, obstore's `LocalStore` and `S3Store`), so nothing here
re-implements storage; this module only adds the few operations the store's protocol
needs on top: JSON objects, create-only writes (claims), and promoting a staged episode.

URIs: a path or `file://path` is a local directory; `s3://bucket/prefix` is S3 or any
S3-compatible server, configured the usual way by environment variables
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
`AWS_ALLOW_HTTP=true` for a plain-http server) or by `options`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import LocalStore as ObjLocalStore
from obstore.store import from_url
from zarr.abc.store import Store as ZarrStore
from zarr.storage import LocalStore, ObjectStore


class StoreError(RuntimeError):
    """The store cannot be opened or is not in the expected state; the message says why."""


class Backend:
    """A store root: small objects through obstore, episode arrays through zarr."""

    def __init__(self, uri: str | Path, options: dict[str, Any] | None = None):
        """uri: local directory (created if missing) or s3://bucket/prefix; options: passed to obstore."""
        text = str(uri)
        self.uri = text
        if "://" not in text or text.startswith("file://"):
            root = Path(text.removeprefix("file://")).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
            self.local_root: Path | None = root
            self.objects: Any = ObjLocalStore(root)
            self.zarr: ZarrStore = LocalStore(root)
        elif text.startswith("s3://"):
            self.local_root = None
            try:
                self.objects = from_url(text, **(options or {}))
            except Exception as exc:
                raise StoreError(f"cannot open {text}: {exc}") from exc
            self.zarr = ObjectStore(self.objects)
        else:
            raise StoreError(f"unsupported store URI {text!r}: use a local directory or s3://bucket/prefix")

    @property
    def is_local(self) -> bool:
        return self.local_root is not None

    def put(self, path: str, data: bytes) -> None:
        """Write (or atomically replace) one object."""
        obstore.put(self.objects, path, data)

    def create(self, path: str, data: bytes) -> bool:
        """Write an object only if none exists at `path`; False when one does (someone else won)."""
        try:
            obstore.put(self.objects, path, data, mode="create")
        except AlreadyExistsError:
            return False
        return True

    def get(self, path: str) -> bytes | None:
        """An object's bytes, or None when it does not exist."""
        try:
            return bytes(obstore.get(self.objects, path).bytes())
        except FileNotFoundError:
            return None

    def put_json(self, path: str, value: Any) -> None:
        self.put(path, json.dumps(value, separators=(",", ":")).encode())

    def get_json(self, path: str) -> Any:
        data = self.get(path)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:  # not UTF-8, or not JSON
            raise StoreError(f"{self.uri}/{path} is not valid JSON ({exc}); the object is damaged") from exc

    def list(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Object metadata (path, size, last_modified, e_tag) under `prefix`, recursively."""
        for batch in obstore.list(self.objects, prefix):
            yield from batch

    def children(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of `prefix` (a 'directory' listing)."""
        listing = obstore.list_with_delimiter(self.objects, prefix.rstrip("/") + "/")
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"])

    def delete_prefix(self, prefix: str) -> None:
        if self.local_root is not None:
            target = self.local_root / prefix
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            return
        paths = [m["path"] for m in self.list(prefix)]
        if paths:
            obstore.delete(self.objects, paths)

    def promote(self, staging: str, final: str) -> None:
        """Move a fully written folder from its staging name to its final name.

        Locally this is one atomic rename. Object stores have no rename: objects are copied
        server-side (no data passes through this process) and the staging copies deleted;
        readers only ever see the episode through the index, written after this returns.
        """
        if self.local_root is not None:
            target = self.local_root / final
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.local_root / staging, target)
            return
        paths = [m["path"] for m in self.list(staging)]
        # the group's zarr.json goes last, so a plain zarr reader never opens a half-copied group
        paths.sort(key=lambda p: p == f"{staging}/zarr.json")
        for path in paths:
            obstore.copy(self.objects, path, final + path[len(staging) :])
        obstore.delete(self.objects, paths)
