"""Calibration of a real arm's cameras and workspace: intrinsics, hand-eye, and the box the safety filter enforces.

`ript calibrate intrinsics|realsense|handeye|workspace` (see `cli`) runs them; results are versioned
YAML under `calibration/<kind>/` (see `results`), each with a report image. The modules import
OpenCV where they need it, so importing this package (and the `ript` CLI) does not.
"""
