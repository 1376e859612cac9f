"""Versioned results: each run adds <name>-vN.yaml and replaces <name>.yaml, which readers load."""

from __future__ import annotations

from pathlib import Path

import pytest

from ript_robot.calibration import results
from ript_robot.calibration.models import CalibrationError, CameraIntrinsics
from ript_robot.calibration.results import current_path, write_versioned
from ript_robot.calibration.synthetic import CAMERA
from ript_robot.config import load_config


def test_every_run_is_a_new_version_and_the_current_file_is_the_newest(tmp_path: Path) -> None:
    first = write_versioned(CAMERA.model_copy(), tmp_path, "intrinsics", "wrist", "first run")
    changed = CAMERA.model_copy(update={"camera_matrix": [[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]]})
    second = write_versioned(changed, tmp_path, "intrinsics", "wrist", "second run\nrefocused")
    assert (first.name, second.name) == ("wrist-v1.yaml", "wrist-v2.yaml")
    current = current_path(tmp_path, "intrinsics", "wrist")
    assert current.read_text() == second.read_text()
    assert current.read_text().startswith("# second run\n# refocused\nversion: 2\n")
    loaded = load_config(CameraIntrinsics, current)
    assert loaded.version == 2 and loaded.matrix()[0, 0] == 600.0
    assert load_config(CameraIntrinsics, first).version == 1  # the old version is kept as it was


def test_version_numbers_taken_by_another_run_meanwhile_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "intrinsics").mkdir()
    for version in (1, 2):
        (tmp_path / "intrinsics" / f"wrist-v{version}.yaml").write_text("# written by another run\n")
    monkeypatch.setattr(results, "_versions", lambda folder, name: [])  # the folder as listed before they came
    assert write_versioned(CAMERA.model_copy(), tmp_path, "intrinsics", "wrist", "run").name == "wrist-v3.yaml"
    assert (tmp_path / "intrinsics" / "wrist-v1.yaml").read_text() == "# written by another run\n"


def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="must be a plain file name"):
        write_versioned(CAMERA.model_copy(), tmp_path, "intrinsics", "../wrist", "run")
