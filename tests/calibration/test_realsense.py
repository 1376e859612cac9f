"""RealSense intrinsics: without the SDK, or without a device, the command says so and what to do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from ript_robot.calibration.models import CameraIntrinsics
from ript_robot.calibration.realsense import RealSenseUnavailable, read_intrinsics
from ript_robot.cli import main as ript
from ript_robot.config import load_config


def _sdk_without_devices() -> SimpleNamespace:
    """pyrealsense2's entry point as it answers on a machine with no camera plugged in."""
    return SimpleNamespace(context=lambda: SimpleNamespace(query_devices=lambda: []))


def _sdk_with_a_device(start: Callable[[object], object]) -> SimpleNamespace:
    """pyrealsense2's entry points as they answer with one camera plugged in, its pipeline started by `start`."""
    device = SimpleNamespace(get_info=lambda what: "215122250000")
    config = SimpleNamespace(enable_device=lambda serial: None, enable_stream=lambda *profile: None)
    return SimpleNamespace(
        context=lambda: SimpleNamespace(query_devices=lambda: [device]),
        camera_info=SimpleNamespace(serial_number="serial_number"),
        config=lambda: config,
        stream=SimpleNamespace(color="stream.color", depth="stream.depth", infrared="stream.infrared"),
        format=SimpleNamespace(bgr8="format.bgr8", z16="format.z16", y8="format.y8"),
        pipeline=lambda: SimpleNamespace(start=start, stop=lambda: None),
    )


def _busy(config: object) -> object:
    raise RuntimeError("xioctl(VIDIOC_S_FMT) failed, errno=16 Last Error: Device or resource busy")


def _fisheye_stream(config: object) -> object:
    """A started pipeline whose stream reports the intrinsics of a fisheye lens (T265-like)."""
    intrinsics = SimpleNamespace(
        width=848, height=800, fx=286.0, fy=286.1, ppx=421.6, ppy=398.9, coeffs=[-0.0066, 0.044, -0.041, 0.0072, 0.0]
    )
    intrinsics.model = "distortion.kannala_brandt4"
    stream = SimpleNamespace(as_video_stream_profile=lambda: SimpleNamespace(get_intrinsics=lambda: intrinsics))
    return SimpleNamespace(get_stream=lambda which: stream)


def test_a_stream_the_device_cannot_start_names_the_profile(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", _sdk_with_a_device(_busy))
    with pytest.raises(
        RealSenseUnavailable,
        match=r"215122250000 cannot start the depth stream at 640x480 z16 15 fps \(xioctl.*busy\).*rs-enumerate-dev",
    ):
        read_intrinsics("d435", stream="depth", width=640, height=480, fps=15)
    assert ript(["calibrate", "realsense", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot start the color stream at 1280x720 bgr8 30 fps" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_factory_intrinsics_of_a_model_opencv_does_not_read_are_written_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    monkeypatch.setitem(sys.modules, "pyrealsense2", _sdk_with_a_device(_fisheye_stream))
    assert ript(["calibrate", "realsense", "--camera", "fisheye", "--out-dir", str(tmp_path)]) == 0
    written = load_config(CameraIntrinsics, tmp_path / "intrinsics" / "fisheye.yaml")
    assert written.distortion_model == "kannala_brandt4" and written.serial == "215122250000"
    assert written.camera_matrix == [[286.0, 0.0, 421.6], [0.0, 286.1, 398.9], [0.0, 0.0, 1.0]]
    assert "note: `ript calibrate handeye` will refuse this file" in capsys.readouterr().err


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
