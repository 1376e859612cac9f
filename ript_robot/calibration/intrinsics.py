"""Camera intrinsics from board images with OpenCV: `ript calibrate intrinsics`.

The board is detected in every image (`detection`), then `cv2.calibrateCameraExtended` fits
the pinhole matrix and the distortion (k1, k2, p1, p2; k3 on request: it over-fits ordinary
lenses when the views do not reach the image corners). A fit is refused when it cannot be
trusted: too few views, or views whose board planes are all (nearly) parallel, e.g. all
head-on, where focal length and distance cannot be told apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ript_robot.calibration.detection import BoardDetection, detect_all
from ript_robot.calibration.models import BoardSpec, CalibrationError, CameraIntrinsics

MIN_VIEWS = 5
MIN_TILT_SPREAD_DEG = 10.0  # boards in (nearly) parallel planes leave the focal length unknown (Zhang 2000)


@dataclass
class IntrinsicsFit:
    """A calibration result with what the report shows: detections, their reprojections, per-view error."""

    intrinsics: CameraIntrinsics
    detections: list[BoardDetection]
    reprojected: list[np.ndarray]  # N x 2 per detection, pixels
    per_view_rms_px: np.ndarray
    tilt_spread_deg: float  # largest angle between the board planes of two views
    std_px: np.ndarray  # standard deviations of fx, fy, cx, cy (pixels), as OpenCV estimates them from the residuals
    skipped: list[str] = field(default_factory=list)  # images without the board


def fit_intrinsics(
    detections: Sequence[BoardDetection],
    image_size: tuple[int, int],
    board: BoardSpec,
    camera: str,
    fit_k3: bool = False,
) -> IntrinsicsFit:
    """Fit K and distortion to board detections of one camera; CalibrationError when the views cannot pin them."""
    if len(detections) < MIN_VIEWS:
        raise CalibrationError(
            f"{len(detections)} usable views of the board; intrinsics need at least {MIN_VIEWS} "
            "(10-20 give a good fit): take more images, tilting the board 20-45 degrees in different "
            "directions and reaching the image corners"
        )
    object_points = [d.object_points for d in detections]
    image_points = [d.image_points.reshape(-1, 1, 2) for d in detections]
    flags = 0 if fit_k3 else cv2.CALIB_FIX_K3
    rms, k, dist, rvecs, tvecs, std_intrinsics, _, per_view = cv2.calibrateCameraExtended(
        object_points, image_points, image_size, None, None, flags=flags
    )
    normals = np.array([cv2.Rodrigues(rvec)[0][:, 2] for rvec in rvecs])
    spread = float(np.degrees(np.arccos(np.clip((normals @ normals.T).min(), -1.0, 1.0))))
    if spread < MIN_TILT_SPREAD_DEG:
        raise CalibrationError(
            f"the board lies in (nearly) parallel planes in all {len(detections)} views (they differ by at most "
            f"{spread:.1f} degrees, {MIN_TILT_SPREAD_DEG} needed): focal length and distance cannot be told apart; "
            "add views with the board tilted 20-45 degrees towards each side"
        )
    reprojected = [
        cv2.projectPoints(d.object_points, rvec, tvec, k, dist)[0].reshape(-1, 2)
        for d, rvec, tvec in zip(detections, rvecs, tvecs, strict=True)
    ]
    intrinsics = CameraIntrinsics(
        camera=camera,
        source=board.kind,
        image_size=list(image_size),
        camera_matrix=k.tolist(),
        dist_coeffs=dist.ravel().tolist(),
        rms_reprojection_px=float(rms),
        views=len(detections),
        board=board,
    )
    return IntrinsicsFit(
        intrinsics, list(detections), reprojected, per_view.ravel(), spread, std_intrinsics[:4].ravel()
    )


def calibrate_intrinsics(
    images: Sequence[tuple[str, np.ndarray]],
    board: BoardSpec,
    camera: str,
    skip_undetected: bool = False,
    fit_k3: bool = False,
) -> IntrinsicsFit:
    """Detect the board in (name, image) pairs of one camera and fit its intrinsics."""
    sizes = {(image.shape[1], image.shape[0]) for _, image in images}
    if not sizes:
        raise CalibrationError(f"no images given; intrinsics need at least {MIN_VIEWS} views of the board")
    if len(sizes) > 1:
        raise CalibrationError(f"the images differ in size {sorted(sizes)}: calibrate one camera stream at a time")
    detections, skipped = detect_all(images, board, skip_undetected)
    fit = fit_intrinsics(detections, sizes.pop(), board, camera, fit_k3)
    fit.skipped = skipped
    return fit
