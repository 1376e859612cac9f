"""Report images of calibration runs, saved beside each result so a person can judge it at a glance.

Intrinsics: the worst views with detected corners, reprojected corners and the errors magnified,
the error of every view, and all residuals. Hand-eye: how far AX and XB disagree for every pose
pair, and per pose (a bad pose shows up in every pair it is in). Workspace: the box, keep-out
boxes and recorded corners seen from above and from the side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ript_robot.calibration.handeye import HandEyeSolution
from ript_robot.calibration.intrinsics import IntrinsicsFit
from ript_robot.calibration.models import Box, HandEyeCalibration, WorkspaceCalibration

ERROR_SCALE = 20.0  # reprojection errors are drawn this many times longer than they are


def intrinsics_report(fit: IntrinsicsFit, images: Sequence[tuple[str, np.ndarray]], path: Path) -> Path:
    """PNG: the four worst views (detected +, reprojected x, errors x20), error per view, all residuals."""
    by_name = dict(images)
    worst = np.argsort(fit.per_view_rms_px)[::-1][:4]
    fig = Figure(figsize=(16, 9), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1.2, 1])
    for column, index in enumerate(worst):
        detection, reprojected = fit.detections[index], fit.reprojected[index]
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(by_name[detection.name][..., ::-1])
        found = detection.image_points
        ax.plot(found[:, 0], found[:, 1], "+", color="lime", ms=6, label="detected")
        ax.plot(reprojected[:, 0], reprojected[:, 1], "x", color="red", ms=4, label="reprojected")
        error = (reprojected - found) * ERROR_SCALE
        ax.quiver(
            found[:, 0], found[:, 1], error[:, 0], error[:, 1], color="yellow", angles="xy", scale_units="xy", scale=1
        )
        ax.set_title(f"{Path(detection.name).name}: {fit.per_view_rms_px[index]:.2f} px", fontsize=9)
        ax.set_axis_off()
    fig.axes[0].legend(loc="lower left", fontsize=7)
    bars = fig.add_subplot(grid[1, :2])
    bars.bar(range(len(fit.per_view_rms_px)), fit.per_view_rms_px, color="tab:blue")
    bars.set_xlabel("view")
    bars.set_ylabel("RMS reprojection error (px)")
    bars.set_title(f"per view (skipped, board not found: {len(fit.skipped)})")
    residuals = np.concatenate([r - d.image_points for r, d in zip(fit.reprojected, fit.detections, strict=True)])
    scatter = fig.add_subplot(grid[1, 2:])
    scatter.plot(residuals[:, 0], residuals[:, 1], ".", ms=2, alpha=0.5)
    scatter.set_aspect("equal")
    scatter.set_xlabel("reprojected - detected, x (px)")
    scatter.set_ylabel("y (px)")
    scatter.set_title("all corners")
    cam = fit.intrinsics
    k = cam.matrix()
    fig.suptitle(
        f"{cam.camera}: fx {k[0, 0]:.1f} fy {k[1, 1]:.1f} cx {k[0, 2]:.1f} cy {k[1, 2]:.1f} px, "
        f"dist {np.round(cam.dist_coeffs, 4).tolist()}, RMS {cam.rms_reprojection_px:.3f} px over {cam.views} views "
        f"(yellow: errors x{ERROR_SCALE:g})"
    )
    fig.savefig(path, dpi=80)
    return path


def hand_eye_report(result: HandEyeCalibration, solution: HandEyeSolution, path: Path) -> Path:
    """PNG: AX = XB disagreement (rotation, translation) per pose pair and averaged per pose."""
    fig = Figure(figsize=(14, 8), layout="constrained")
    pairs = np.arange(len(solution.pairs))
    per_pose = solution.per_pose()
    panels = [
        (solution.rot_residual_deg, result.residual_rot_deg_rms, "rotation (deg)", "pose pair"),
        (solution.trans_residual_mm, result.residual_trans_mm_rms, "translation (mm)", "pose pair"),
        (per_pose[:, 0], None, "rotation, mean over the pairs of a pose (deg)", "pose"),
        (per_pose[:, 1], None, "translation, mean over the pairs of a pose (mm)", "pose"),
    ]
    for n, (values, rms, label, xlabel) in enumerate(panels):
        ax = fig.add_subplot(2, 2, n + 1)
        ax.bar(pairs if xlabel == "pose pair" else np.arange(len(values)), values, color="tab:orange")
        if rms is not None:
            ax.axhline(rms, color="black", ls="--", label=f"RMS {rms:.3g}")
            ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
    t = np.round(np.array(result.translation_m) * 1000, 1).tolist()
    fig.suptitle(
        f"{result.setup} {result.parent_frame} -> {result.camera_frame}: t {t} mm, "
        f"q {np.round(result.quaternion_xyzw, 4).tolist()}; {result.poses} poses, rotation axes spread "
        f"{result.rotation_axis_spread_deg:.0f} deg; AX vs XB residual per pair"
    )
    fig.savefig(path, dpi=80)
    return path


def _rectangle(box: Box, axes: tuple[int, int], **style: object) -> Rectangle:
    (a, b), low, high = axes, box.low, box.high
    return Rectangle((low[a], low[b]), high[a] - low[a], high[b] - low[b], **style)


def workspace_report(workspace: WorkspaceCalibration, recorded: np.ndarray | None, path: Path) -> Path:
    """PNG: the workspace (green), keep-out boxes (red) and recorded corners, from above and from the side."""
    views = [((0, 1), "from above: x, y (m)")] + (
        [((0, 2), "from the side: x, z (m)")] if len(workspace.box.low) > 2 else []
    )
    fig = Figure(figsize=(7 * len(views), 6), layout="constrained")
    for n, (axes, title) in enumerate(views):
        ax = fig.add_subplot(1, len(views), n + 1)
        ax.add_patch(_rectangle(workspace.box, axes, fill=False, ec="green", lw=2, label="workspace"))
        for i, box in enumerate(workspace.keep_out):
            label = "keep out" if i == 0 else None
            ax.add_patch(_rectangle(box, axes, fc="red", alpha=0.3, ec="red", label=label))
        if recorded is not None:
            ax.plot(recorded[:, axes[0]], recorded[:, axes[1]], "k.", label="recorded")
        ax.autoscale_view()
        ax.margins(0.1)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"workspace v{workspace.version} in {workspace.frame}")
    fig.savefig(path, dpi=80)
    return path
