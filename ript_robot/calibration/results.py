"""Versioned calibration results: every run is kept, and one fixed path always holds the newest.

A run of kind K named N writes `<root>/K/N-v<V>.yaml` with V one above the highest version
there (the result's `version` field says V too), its report image `N-v<V>.png` beside it,
and then replaces `<root>/K/N.yaml` with a copy: the path robots and launch files name, e.g.
`runtime.safety.workspace: calibration/workspace/arm.yaml`. Older versions stay for comparison
and rollback (copy one over N.yaml). A version file is created exclusively, so two runs at the
same moment cannot take the same number, and N.yaml is replaced atomically, so a reader never
sees half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from ript_robot.calibration.models import CalibrationError
from ript_robot.config import ConfigModel

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _versions(folder: Path, name: str) -> list[int]:
    pattern = re.compile(rf"{re.escape(name)}-v(\d+)\.yaml")
    matches = (pattern.fullmatch(p.name) for p in folder.glob(f"{name}-v*.yaml")) if folder.is_dir() else ()
    return sorted(int(m.group(1)) for m in matches if m)


def current_path(root: Path, kind: str, name: str) -> Path:
    """Where the current (newest, unless rolled back) result of a kind and name is: `<root>/<kind>/<name>.yaml`."""
    return root / kind / f"{name}.yaml"


def write_versioned(result: ConfigModel, root: Path, kind: str, name: str, header: str) -> Path:
    """Save `result` as the next version and as the current one; returns the version file's path.

    header: comment lines put on top of the YAML (what wrote it, how to read it).
    """
    if not NAME.fullmatch(name):
        raise CalibrationError(f"name {name!r} must be a plain file name (letters, digits, '_', '-', '.')")
    folder = root / kind
    folder.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    version = (_versions(folder, name) or [0])[-1] + 1
    while True:
        result.version = version  # every result model has one
        # lists of numbers on one line each ([fx, 0, cx]), sections in block style
        text = comment + yaml.safe_dump(
            result.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=1000
        )
        path = folder / f"{name}-v{version}.yaml"
        try:
            with path.open("x") as handle:
                handle.write(text)
            break
        except FileExistsError:  # another run took this number meanwhile
            version += 1
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, current_path(root, kind, name))
    return path
