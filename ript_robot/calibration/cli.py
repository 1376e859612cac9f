"""`ript calibrate intrinsics|realsense|handeye|workspace`: the calibration commands of the `ript` CLI.

`add_calibrate_commands` registers them on the main parser; `run_calibrate` runs the one chosen.
Each run writes a versioned YAML result and a report image under `--out-dir` (see `results`),
and prints where they went with the figures that say whether to trust them. OpenCV is imported
only when a calibration runs, so the rest of `ript` works without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("calibration")
# largest AX = XB residual RMS of a hand-eye result that is written; 0.3 px of corner noise gives about 0.25 deg, 2 mm
MAX_RESIDUAL_DEG = 1.0
MAX_RESIDUAL_MM = 10.0


def _add_board_arguments(parser: argparse.ArgumentParser) -> None:
    board = parser.add_argument_group("board", "the printed target, counted in squares")
    board.add_argument("--board", choices=["checkerboard", "charuco"], default="checkerboard", help="target type")
    board.add_argument("--columns", type=int, required=True, help="squares along the board's width")
    board.add_argument("--rows", type=int, required=True, help="squares along the board's height")
    board.add_argument("--square-m", type=float, required=True, help="side of one printed square, metres")
    board.add_argument("--marker-m", type=float, help="ChArUco: side of one printed marker, metres")
    board.add_argument("--dictionary", default="DICT_5X5_100", help="ChArUco: cv2.aruco dictionary name")
    parser.add_argument("--skip-undetected", action="store_true", help="leave out images without the board")


def add_calibrate_commands(subparsers: Any) -> None:
    """Register `calibrate` and its four subcommands on the `ript` parser's subparsers."""
    text = "calibrate cameras, hand-eye and the workspace the safety filter enforces"
    calibrate = subparsers.add_parser("calibrate", help=text, description=text)
    calibrate.set_defaults(config=None, overrides=[])  # `ript` loads its config for every command
    kinds = calibrate.add_subparsers(dest="calibration", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--out-dir", type=Path, default=DEFAULT_ROOT, metavar="DIR", help="results root (default: calibration/)"
        )
        return p

    intr = add("intrinsics", "camera matrix and distortion from board images (OpenCV)")
    intr.add_argument("images", nargs="+", help="image files, or folders of them")
    intr.add_argument("--camera", default="camera", help="camera name: the result is intrinsics/<camera>.yaml")
    intr.add_argument(
        "--fit-k3", action="store_true", help="also fit k3 (wide-angle lenses, views reaching the corners)"
    )
    _add_board_arguments(intr)

    rs = add("realsense", "intrinsics read from a connected Intel RealSense (needs pyrealsense2)")
    rs.add_argument("--camera", default="realsense", help="camera name: the result is intrinsics/<camera>.yaml")
    rs.add_argument("--serial", help="the device's serial number (default: the first one found)")
    rs.add_argument("--stream", choices=["color", "depth", "infrared"], default="color", help="which stream")
    rs.add_argument("--width", type=int, default=1280, help="stream width, pixels")
    rs.add_argument("--height", type=int, default=720, help="stream height, pixels")
    rs.add_argument("--fps", type=int, default=30, help="stream frame rate")

    he = add("handeye", "camera pose on the gripper (eye-in-hand) or in the cell (eye-to-hand)")
    he.add_argument("--setup", choices=["eye_in_hand", "eye_to_hand"], required=True, help="where the camera is")
    he.add_argument(
        "--poses",
        type=Path,
        required=True,
        metavar="FILE",
        help="recorded gripper poses in the base frame (YAML or CSV)",
    )
    he.add_argument(
        "--images",
        nargs="+",
        required=True,
        help="one image per pose, in pose order: files, or a folder (its images in natural name order, station_2 "
        "before station_10; a shell glob sorts station_10 first)",
    )
    he.add_argument("--intrinsics", type=Path, required=True, metavar="FILE", help="the camera's intrinsics YAML")
    he.add_argument("--parent-frame", help="tool frame (eye-in-hand, default tool0) or base frame (default base_link)")
    he.add_argument("--camera-frame", help="the camera's optical frame (default <camera>_optical_frame)")
    he.add_argument("--name", help="result name (default: the camera's name)")
    he.add_argument(
        "--max-residual-deg",
        type=float,
        default=MAX_RESIDUAL_DEG,
        metavar="DEG",
        help=f"refuse a result whose AX=XB rotation residual RMS is above this (default {MAX_RESIDUAL_DEG:g} deg)",
    )
    he.add_argument(
        "--max-residual-mm",
        type=float,
        default=MAX_RESIDUAL_MM,
        metavar="MM",
        help=f"refuse a result whose AX=XB translation residual RMS is above this (default {MAX_RESIDUAL_MM:g} mm)",
    )
    _add_board_arguments(he)

    ws = add("workspace", "the box (and keep-out boxes) the safety filter keeps the end effector in")
    ws.add_argument("--name", default="workspace", help="result name: workspace/<name>.yaml")
    ws.add_argument("--low", type=float, nargs="+", metavar="M", help="box low corner, metres (entered by hand)")
    ws.add_argument("--high", type=float, nargs="+", metavar="M", help="box high corner, metres (entered by hand)")
    ws.add_argument(
        "--corners", type=Path, metavar="FILE", help="poses file of the corners the arm was jogged to (YAML or CSV)"
    )
    ws.add_argument("--margin", type=float, default=0.0, help="shrink the recorded box (grow keep-outs) by this, m")
    ws.add_argument(
        "--keep-out",
        type=float,
        nargs="+",
        action="append",
        default=[],
        metavar="M",
        help="a keep-out box by hand: its low corner then its high corner, metres (repeat for more boxes)",
    )
    ws.add_argument(
        "--keep-out-corners",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help="poses file of a keep-out box",
    )
    ws.add_argument("--frame", help="frame of the boxes (default: previous version's, else base_link)")
    ws.add_argument(
        "--state-position", type=int, nargs="+", metavar="I", help="indices of the end-effector position in the state"
    )
    ws.add_argument(
        "--action-position", type=int, nargs="+", metavar="I", help="indices of the position deltas in the action"
    )
    ws.add_argument(
        "--action-dim", type=int, metavar="N", help="length of the robot's action: refuse action indices beyond it"
    )
    ws.add_argument("--metres-per-action", type=float, help="end-effector displacement per unit action per step")
    ws.add_argument("--max-step-m", type=float, help="largest end-effector move per step, metres")
    ws.add_argument("--max-command-change", type=float, help="largest change of an action entry between steps")


def _board(args: argparse.Namespace) -> Any:
    from ript_robot.calibration.models import BoardSpec

    fields = {
        "kind": args.board,
        "columns": args.columns,
        "rows": args.rows,
        "square_m": args.square_m,
        "marker_m": args.marker_m,
        "dictionary": args.dictionary,
    }
    return _validated(BoardSpec, fields, "board flags")


def _validated(cls: Any, fields: dict[str, Any], source: str) -> Any:
    from pydantic import ValidationError

    from ript_robot.calibration.models import CalibrationError
    from ript_robot.config import format_errors

    try:
        return cls(**fields)
    except ValidationError as exc:
        raise CalibrationError(format_errors(cls, exc, source)) from None


def _intrinsics(args: argparse.Namespace) -> None:
    from ript_robot.calibration.detection import load_images
    from ript_robot.calibration.intrinsics import calibrate_intrinsics
    from ript_robot.calibration.report import intrinsics_report
    from ript_robot.calibration.results import write_versioned

    board = _board(args)
    images = load_images(args.images)
    fit = calibrate_intrinsics(images, board, args.camera, args.skip_undetected, args.fit_k3)
    cam = fit.intrinsics
    header = (
        f"written by `ript calibrate intrinsics` from {cam.views} views; load with load_config(CameraIntrinsics, path)"
    )
    path = write_versioned(cam, args.out_dir, "intrinsics", args.camera, header)
    report = intrinsics_report(fit, images, path.with_suffix(".png"))
    k, std = cam.matrix(), fit.std_px
    print(f"wrote {path} and {report}")
    print(
        f"RMS reprojection {cam.rms_reprojection_px:.3f} px over {cam.views} views ({len(fit.skipped)} skipped); "
        f"fx {k[0, 0]:.1f}+-{std[0]:.1f} fy {k[1, 1]:.1f}+-{std[1]:.1f} cx {k[0, 2]:.1f}+-{std[2]:.1f} "
        f"cy {k[1, 2]:.1f}+-{std[3]:.1f} px (+-: one standard deviation); board planes spread "
        f"{fit.tilt_spread_deg:.0f} deg"
    )


def _realsense(args: argparse.Namespace) -> None:
    from ript_robot.calibration.models import CalibrationError
    from ript_robot.calibration.realsense import read_intrinsics
    from ript_robot.calibration.results import write_versioned

    cam = read_intrinsics(args.camera, args.serial, args.stream, args.width, args.height, args.fps)
    header = f"written by `ript calibrate realsense` from device {cam.serial} ({args.stream} stream, factory values)"
    path = write_versioned(cam, args.out_dir, "intrinsics", args.camera, header)
    print(f"wrote {path}: {cam.image_size[0]}x{cam.image_size[1]}, K {cam.camera_matrix}, {cam.distortion_model}")
    try:
        cam.distortion()
    except CalibrationError as exc:
        print(f"note: `ript calibrate handeye` will refuse this file: {exc}", file=sys.stderr)


def _handeye(args: argparse.Namespace) -> None:
    from ript_robot.calibration.detection import load_images
    from ript_robot.calibration.handeye import calibrate_hand_eye, check_residuals
    from ript_robot.calibration.models import CameraIntrinsics, load_recorded_poses
    from ript_robot.calibration.report import hand_eye_report
    from ript_robot.calibration.results import write_versioned
    from ript_robot.config import load_config

    board = _board(args)
    intrinsics = load_config(CameraIntrinsics, args.intrinsics)
    arm = load_recorded_poses(args.poses)
    parent = args.parent_frame or ("tool0" if args.setup == "eye_in_hand" else "base_link")
    camera_frame = args.camera_frame or f"{intrinsics.camera}_optical_frame"
    result, solution = calibrate_hand_eye(
        arm,
        load_images(args.images),
        board,
        intrinsics,
        str(args.intrinsics),
        args.setup,
        parent,
        camera_frame,
        args.skip_undetected,
    )
    check_residuals(solution, args.max_residual_deg, args.max_residual_mm)  # before anything is written
    header = f"written by `ript calibrate handeye`: T_{parent}_{camera_frame} ({args.setup}), from {result.poses} poses"
    path = write_versioned(result, args.out_dir, "handeye", args.name or intrinsics.camera, header)
    report = hand_eye_report(result, solution, path.with_suffix(".png"))
    print(f"wrote {path} and {report}")
    print(
        f"t {[round(v, 4) for v in result.translation_m]} m, q {[round(v, 5) for v in result.quaternion_xyzw]}; "
        f"AX=XB residual RMS {result.residual_rot_deg_rms:.3f} deg / {result.residual_trans_mm_rms:.2f} mm "
        f"(max {result.residual_rot_deg_max:.3f} / {result.residual_trans_mm_max:.2f}) over {result.pairs} pairs; "
        f"board reprojection {result.pnp_reprojection_px_rms:.3f} px"
    )


def _keep_out_box(values: list[float]) -> Any:
    from ript_robot.calibration.models import CalibrationError
    from ript_robot.calibration.workspace import box_from_corners

    if len(values) % 2:
        raise CalibrationError(f"--keep-out takes the low corner then the high one (2 or 3 values each), got {values}")
    half = len(values) // 2
    return box_from_corners(values[:half], values[half:])


def _workspace(args: argparse.Namespace) -> None:
    import numpy as np

    from ript_robot.calibration.models import CalibrationError, load_recorded_poses, load_workspace
    from ript_robot.calibration.report import workspace_report
    from ript_robot.calibration.results import current_path, write_versioned
    from ript_robot.calibration.workspace import (
        box_from_corners,
        box_from_points,
        check_workspace,
        make_workspace,
        positions,
    )

    by_hand = args.low is not None or args.high is not None
    if by_hand == (args.corners is not None) or (by_hand and (args.low is None or args.high is None)):
        raise CalibrationError("give the box either by hand (--low X Y Z --high X Y Z) or as --corners FILE")
    recorded = []
    if by_hand:
        box = box_from_corners(args.low, args.high)
    else:
        recorded.append(positions(load_recorded_poses(args.corners)))
        box = box_from_points(recorded[-1], args.margin)
    keep_out = [_keep_out_box(values) for values in args.keep_out]
    for file in args.keep_out_corners:
        recorded.append(positions(load_recorded_poses(file)))
        keep_out.append(box_from_points(recorded[-1], args.margin, keep_out=True))
    current = current_path(args.out_dir, "workspace", args.name)
    previous = load_workspace(current) if current.is_file() else None
    settings = {
        "frame": args.frame,
        "state_position": args.state_position,
        "action_position": args.action_position,
        "metres_per_action": args.metres_per_action,
        "max_step_m": args.max_step_m,
        "max_command_change": args.max_command_change,
    }
    workspace = make_workspace(box, keep_out, settings, previous)
    check_workspace(workspace, args.action_dim)  # before anything is written
    how = "entered by hand" if by_hand else f"recorded in {args.corners} with a {args.margin} m margin"
    header = f"written by `ript calibrate workspace`: box {how}; the safety filter reads it (runtime.safety.workspace)"
    path = write_versioned(workspace, args.out_dir, "workspace", args.name, header)
    report = workspace_report(workspace, np.concatenate(recorded) if recorded else None, path.with_suffix(".png"))
    print(f"wrote {path} and {report}; {current} is the current version, accepted by the safety filter")
    print(f"box {workspace.box.low} .. {workspace.box.high} in {workspace.frame}, {len(keep_out)} keep-out boxes")
    if previous is not None and len(previous.keep_out) > len(keep_out):
        print(
            f"note: the previous version had {len(previous.keep_out)} keep-out boxes, this one has {len(keep_out)}; "
            "keep-out boxes are not carried over: give them again if they still apply",
            file=sys.stderr,
        )


def run_calibrate(args: argparse.Namespace) -> int:
    """Run the chosen calibration; a calibration that cannot be trusted prints why and returns 2."""
    from ript_robot.calibration.models import CalibrationError

    handlers = {"intrinsics": _intrinsics, "realsense": _realsense, "handeye": _handeye, "workspace": _workspace}
    try:
        handlers[args.calibration](args)
    except CalibrationError as exc:
        print(f"ript calibrate {args.calibration}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in ("cv2", "scipy"):
            raise
        print(
            f"ript calibrate {args.calibration}: needs OpenCV and scipy: pip install opencv-python scipy",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        cv2 = sys.modules.get("cv2")  # an OpenCV error can only come once OpenCV is imported
        if cv2 is None or not isinstance(exc, cv2.error):
            raise
        message = " ".join(str(exc).split())  # OpenCV's message: version, source line, the failed check
        print(
            f"ript calibrate {args.calibration}: OpenCV failed on this input ({message}); check the images, the "
            "board flags and the intrinsics file",
            file=sys.stderr,
        )
        return 2
    return 0
