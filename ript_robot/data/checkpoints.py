"""Policies published in the store, as bytes: versioned weights, a manifest, a latest pointer.

The trainer publishes each new policy as `policies/v<version>/model.safetensors` with a
`manifest.json` (version, family, config, sha256 of the weights, which episodes trained
it) and then moves `policies/latest.json`, the commit point of a training iteration. This
module writes and reads those bytes and checks them (hash, manifest fields) without building
a model, so store commands never load torch; `policies.published` turns them into a policy.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ript_robot.data.backend import Backend
from ript_robot.types import CheckpointError

LATEST = "policies/latest.json"


def _folder(version: int) -> str:
    return f"policies/v{version:06d}"


def why(exc: Exception) -> str:
    """An exception's message on one line, without the debug dump obstore appends (it goes to /diagnostics)."""
    text = " ".join(str(exc).split("\n\nDebug source:")[0].split())
    return text if len(text) <= 300 else text[:297] + "..."


def _read_json(backend: Backend, path: str, what: str) -> Any:
    """A publication's JSON object (None when absent); any failure to read or parse it is a CheckpointError."""
    try:
        return backend.get_json(path)
    except Exception as exc:  # StoreError for damaged JSON, the backend's own errors for I/O
        raise CheckpointError(f"{what} ({backend.uri}/{path}) cannot be read: {why(exc)}") from exc


def latest_version(backend: Backend) -> int | None:
    """The newest published policy version, None before the first."""
    pointer = _read_json(backend, LATEST, "the latest-policy pointer")
    if pointer is None:
        return None
    version = pointer.get("version") if isinstance(pointer, dict) else None
    if type(version) is not int or version < 0:
        raise CheckpointError(
            f"the latest-policy pointer ({backend.uri}/{LATEST}) names no version (it holds {str(pointer)[:60]!r}); "
            "the trainer rewrites it when it next publishes"
        )
    return version


MANIFEST_FIELDS = {"version": int, "family": str, "config": dict, "sha256": str}


def read_manifest(backend: Backend, version: int) -> dict[str, Any]:
    """A published version's manifest, checked to hold what loading it needs."""
    path = f"{_folder(version)}/manifest.json"
    what = f"policy v{version}'s manifest"
    manifest = _read_json(backend, path, what)
    if manifest is None:
        raise CheckpointError(f"{backend.uri} has no policy v{version}: {what} ({backend.uri}/{path}) is missing")
    if not isinstance(manifest, dict):
        manifest = {}
    wrong = [k for k, kind in MANIFEST_FIELDS.items() if type(manifest.get(k)) is not kind]
    if wrong or manifest["version"] != version:
        problem = f"{', '.join(wrong)} missing or mistyped" if wrong else f"it names version {manifest['version']}"
        raise CheckpointError(f"{what} ({backend.uri}/{path}) is damaged: {problem}")
    return manifest


def published_versions(backend: Backend) -> list[int]:
    return sorted(int(name[1:]) for name in backend.children("policies") if name.startswith("v"))


def publish_weights(backend: Backend, version: int, data: bytes, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a version's weights and manifest (adding its sha256, size and time), then point `latest` at it."""
    manifest = {
        "version": version,
        **manifest,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "created": time.time(),
    }
    folder = _folder(version)
    backend.put(f"{folder}/model.safetensors", data)
    backend.put_json(f"{folder}/manifest.json", manifest)
    backend.put_json(LATEST, {"version": version})
    return manifest


def read_weights(backend: Backend, version: int | None = None) -> tuple[dict[str, Any], bytes, str]:
    """A published version's (the latest by default) manifest, weight bytes with their sha256 checked,
    and a name for messages ('policy vN (uri/path)'). Any failure is a CheckpointError naming the file."""
    if version is None:
        version = latest_version(backend)
        if version is None:
            raise CheckpointError(f"{backend.uri} has no published policy yet: start `ript train` first")
    manifest = read_manifest(backend, version)
    path = f"{_folder(version)}/model.safetensors"
    source = f"policy v{version} ({backend.uri}/{path})"
    try:
        data = backend.get(path)
    except Exception as exc:
        raise CheckpointError(f"{source} cannot be read: {why(exc)}") from exc
    if data is None:
        raise CheckpointError(f"{source} is missing")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise CheckpointError(
            f"{source} has sha256 {digest[:12]}..., its manifest says {manifest['sha256'][:12]}...: "
            "the weights are damaged or were replaced; not loading them"
        )
    return manifest, data, source
