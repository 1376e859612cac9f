"""Camera frames to the policy's input size: area interpolation, one function for every path.

A 640x480 RealSense frame shrunk to 64x64 by nearest-pixel sampling keeps one pixel in
75 and aliases thin edges (a gripper finger, a cup's rim) in and out of view from frame to
frame. Area interpolation averages every source pixel into the output pixel it falls in
(OpenCV's INTER_AREA, PIL's BOX), so what the policy sees does not flicker. The ROS policy
node, the rosbag importer, the demonstration loaders and the success detector all call
`resize_area`, so a policy trained on imported frames sees the same pixels on the arm.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix: row i averages the source span [i, i+1) * n_in / n_out."""
    edges = np.arange(n_out + 1, dtype=np.float64) * n_in / n_out
    left, right = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(right, pixel + 1) - np.maximum(left, pixel), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_area(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 (H, W, C) image to `hw` = (height, width) by area averaging.

    Shrinking averages each output pixel's footprint; enlarging reduces to nearest-pixel
    blocks. Returns a new contiguous uint8 array; the input is returned as-is when it
    already has the size. ValueError on anything but a non-empty 3-D uint8 array.
    """
    if image.ndim != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"resize_area takes a non-empty uint8 (H, W, C) image, got {image.dtype} {image.shape}")
    height, width = int(hw[0]), int(hw[1])
    if height < 1 or width < 1:
        raise ValueError(f"target size must be at least 1x1 pixels, got {hw}")
    if image.shape[:2] == (height, width):
        return image
    rows = _weights(image.shape[0], height)
    cols = _weights(image.shape[1], width)
    h, w, c = image.shape
    tall = rows @ image.reshape(h, w * c).astype(np.float32)  # (height, w*c)
    out = (tall.reshape(height, w, c).transpose(0, 2, 1) @ cols.T).transpose(0, 2, 1)  # (height, width, c)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
