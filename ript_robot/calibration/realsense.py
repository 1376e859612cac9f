"""Intrinsics of an Intel RealSense camera, read from the device's factory calibration: `ript calibrate realsense`.

pyrealsense2 is optional (`pip install pyrealsense2`): it is imported only here, when asked for,
and a missing package, a missing device or a stream the device cannot start is a clear
`RealSenseUnavailable`, never a traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

from ript_robot.calibration.models import CalibrationError, CameraIntrinsics

STREAMS = {"color": "bgr8", "depth": "z16", "infrared": "y8"}  # stream -> pixel format to start it with


class RealSenseUnavailable(CalibrationError):
    """No intrinsics to read: pyrealsense2 missing, no (such) device connected, or a stream it cannot start."""


def _sdk() -> Any:
    try:
        return importlib.import_module("pyrealsense2")
    except ImportError as exc:
        raise RealSenseUnavailable(
            "pyrealsense2 is not installed: `pip install pyrealsense2` (Intel's wheels for x86_64 and arm64 "
            "Linux, Windows, macOS), or build librealsense with its Python bindings"
        ) from exc


def read_intrinsics(
    camera: str, serial: str | None = None, stream: str = "color", width: int = 1280, height: int = 720, fps: int = 30
) -> CameraIntrinsics:
    """Start the stream on the device (the first one, or `serial`) and read its intrinsics.

    The coefficients are the SDK's: for `brown_conrady` they are OpenCV's (k1, k2, p1, p2, k3);
    `distortion_model` names the model (the D400 colour stream often reports zeros under
    `inverse_brown_conrady`; fisheye streams report `kannala_brandt4`, for cv2.fisheye).
    """
    if stream not in STREAMS:
        raise CalibrationError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    rs = _sdk()
    devices = list(rs.context().query_devices())
    serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
    if not devices:
        raise RealSenseUnavailable(
            "no RealSense device connected: plug the camera into a USB 3 port and check it with "
            "`rs-enumerate-devices` (on Linux the udev rules of librealsense must be installed)"
        )
    if serial is not None and serial not in serials:
        raise RealSenseUnavailable(f"no RealSense device with serial {serial} connected; connected: {serials}")
    device = serial or serials[0]
    config = rs.config()
    config.enable_device(device)
    config.enable_stream(getattr(rs.stream, stream), width, height, getattr(rs.format, STREAMS[stream]), fps)
    pipeline = rs.pipeline()
    try:
        profile = pipeline.start(config)
    except RuntimeError as exc:  # the SDK's error for a profile the device lacks, or a device in use
        raise RealSenseUnavailable(
            f"RealSense {device} cannot start the {stream} stream at {width}x{height} {STREAMS[stream]} {fps} fps "
            f"({exc}): the device may not offer that profile (list them with `rs-enumerate-devices`, then pass "
            "--width, --height, --fps), or another program (realsense-viewer, a ROS driver) holds the camera"
        ) from exc
    try:
        intr = profile.get_stream(getattr(rs.stream, stream)).as_video_stream_profile().get_intrinsics()
    finally:
        pipeline.stop()
    return CameraIntrinsics(
        camera=camera,
        source="realsense",
        image_size=[intr.width, intr.height],
        camera_matrix=[[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]],
        dist_coeffs=list(intr.coeffs),
        distortion_model=str(intr.model).rsplit(".", 1)[-1],
        serial=device,
    )
