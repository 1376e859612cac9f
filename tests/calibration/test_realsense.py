"""RealSense intrinsics: without the SDK, or without a device, the command says so and what to do."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from ript_robot.calibration.realsense import RealSenseUnavailable, read_intrinsics
from ript_robot.cli import main as ript


def _sdk_without_devices() -> SimpleNamespace:
    """pyrealsense2's entry point as it answers on a machine with no camera plugged in."""
    return SimpleNamespace(context=lambda: SimpleNamespace(query_devices=lambda: []))


def test_without_pyrealsense2_the_message_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # makes `import pyrealsense2` fail
    with pytest.raises(RealSenseUnavailable, match="pyrealsense2 is not installed: `pip install pyrealsense2`"):
        read_intrinsics("d435")


def test_without_a_device_the_message_says_none_is_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", _sdk_without_devices())
    with pytest.raises(RealSenseUnavailable, match="no RealSense device connected: plug the camera into a USB 3 port"):
        read_intrinsics("d435")


def test_the_command_reports_a_missing_device_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", _sdk_without_devices())
    assert ript(["calibrate", "realsense", "--out-dir", str(tmp_path)]) == 2
    assert "ript calibrate realsense: no RealSense device connected" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_unknown_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="stream must be one of color, depth, infrared"):
        read_intrinsics("d435", stream="thermal")
