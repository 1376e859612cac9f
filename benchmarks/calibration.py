"""How accurately the calibration tools recover a known camera and hand-eye transform from noisy views.

Synthetic data with ground truth (ript_robot.calibration.synthetic): checkerboard images of a
640x480 camera with lens distortion, every square corner moved by Gaussian noise of 0.3 px per
axis before the board is drawn, then blurred and given sensor noise; the calibration runs its
real path on the images (findChessboardCorners, cornerSubPix, calibrateCamera, solvePnP, the
Park-Martin hand-eye). Each trial draws new views; the figures are the worst over the trials.

- intrinsics from 25 views: `reprojection_px` (calibrateCamera's RMS, the 2-d distance, so
  about sqrt(2) x 0.3 px when the model fits), `focal_error_pct` (worse of fx, fy);
- hand-eye from 25 poses, eye-in-hand and eye-to-hand, with the true intrinsics (the hand-eye
  step alone): `handeye_rot_deg`, `handeye_trans_mm` against the true transform; and the same
  with the intrinsics calibrated in the same trial (the whole chain an operator runs).

    python benchmarks/calibration.py [--trials 5] [--smoke]

Prints the figures and saves benchmarks/results/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ript_robot.calibration import synthetic
from ript_robot.calibration.handeye import calibrate_hand_eye
from ript_robot.calibration.intrinsics import calibrate_intrinsics
from ript_robot.calibration.transforms import transform_error

RESULTS = Path(__file__).parent / "results"
NOISE_PX = 0.3
VIEWS = 25
POSES = 25
TARGETS = {"reprojection_px": 0.5, "handeye_rot_deg": 0.5, "handeye_trans_mm": 2.0}


def _trial(seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    board, truth = synthetic.BOARD, synthetic.CAMERA
    poses = synthetic.sample_board_poses(board, truth, VIEWS, rng)
    fit = calibrate_intrinsics(synthetic.render_views(board, truth, poses, rng, NOISE_PX), board, "bench")
    k, k_true = fit.intrinsics.matrix(), truth.matrix()
    row = {
        "reprojection_px": fit.intrinsics.rms_reprojection_px,
        "focal_error_pct": 100.0 * max(abs(k[0, 0] / k_true[0, 0] - 1), abs(k[1, 1] / k_true[1, 1] - 1)),
        "principal_point_error_px": float(np.abs(k[:2, 2] - k_true[:2, 2]).max()),
    }
    for setup in ("eye_in_hand", "eye_to_hand"):
        scene = synthetic.hand_eye_scene(setup, POSES, rng, corner_noise_px=NOISE_PX)
        for label, intrinsics in (("", truth), ("chain_", fit.intrinsics)):
            result, solution = calibrate_hand_eye(
                scene.arm, scene.images, board, intrinsics, "benchmark", setup, "parent", "camera"
            )
            rot, trans = transform_error(solution.transform, scene.truth)
            row[f"{label}{setup}_rot_deg"] = rot
            row[f"{label}{setup}_trans_mm"] = trans
            if not label:
                row[f"{setup}_residual_rot_deg_rms"] = result.residual_rot_deg_rms
                row[f"{setup}_residual_trans_mm_rms"] = result.residual_trans_mm_rms
    return row


def main(trials: int = 5, save: bool = True) -> dict:
    t0 = time.perf_counter()
    rows = [_trial(seed) for seed in range(trials)]
    worst = {key: float(max(row[key] for row in rows)) for key in rows[0]}
    result = {
        "reprojection_px": worst["reprojection_px"],
        "focal_error_pct": worst["focal_error_pct"],
        "handeye_rot_deg": max(worst["eye_in_hand_rot_deg"], worst["eye_to_hand_rot_deg"]),
        "handeye_trans_mm": max(worst["eye_in_hand_trans_mm"], worst["eye_to_hand_trans_mm"]),
        "handeye_chain_rot_deg": max(worst["chain_eye_in_hand_rot_deg"], worst["chain_eye_to_hand_rot_deg"]),
        "handeye_chain_trans_mm": max(worst["chain_eye_in_hand_trans_mm"], worst["chain_eye_to_hand_trans_mm"]),
        "worst_over_trials": worst,
        "trials": rows,
        "targets": TARGETS,
        "setup": {
            "corner_noise_px": NOISE_PX,
            "intrinsics_views": VIEWS,
            "handeye_poses": POSES,
            "image_size": synthetic.CAMERA.image_size,
            "board_squares": [synthetic.BOARD.columns, synthetic.BOARD.rows],
            "square_m": synthetic.BOARD.square_m,
            "opencv": cv2.__version__,
            "handeye_solver": "cv2.calibrateHandEye" if hasattr(cv2, "calibrateHandEye") else "numpy Park-Martin",
        },
        "seconds": time.perf_counter() - t0,
        "note": "worst over the trials; handeye_* use the true intrinsics, handeye_chain_* the calibrated ones",
    }
    if save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "calibration.json").write_text(json.dumps(result, indent=2))
    print(
        f"intrinsics ({VIEWS} views, {NOISE_PX} px noise, worst of {trials}): reprojection "
        f"{result['reprojection_px']:.3f} px (target <= 0.5), focal error {result['focal_error_pct']:.3f}%, "
        f"principal point {worst['principal_point_error_px']:.2f} px"
    )
    print(
        f"hand-eye ({POSES} poses, both setups): {result['handeye_rot_deg']:.3f} deg (target <= 0.5), "
        f"{result['handeye_trans_mm']:.2f} mm (target <= 2); with calibrated intrinsics "
        f"{result['handeye_chain_rot_deg']:.3f} deg, {result['handeye_chain_trans_mm']:.2f} mm"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="independent draws of views and poses")
    parser.add_argument("--smoke", action="store_true", help="one trial, save nothing (CI)")
    args = parser.parse_args()
    main(1 if args.smoke else args.trials, save=not args.smoke)
