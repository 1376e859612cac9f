"""Export an episode's camera images to a video file, for reviewing what the robot did.

All cameras of the episode are placed side by side, one frame per kept step, encoded as H.264
with PyAV (FFmpeg's libraries, bundled in its wheels). Players need even frame sizes, so
odd sizes are padded by one black row or column.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ript_robot.types import Episode


def episode_frames(episode: Episode) -> np.ndarray:
    """uint8 (F, H, W_total, 3): the cameras of each kept frame side by side, in sorted name order.

    Every step's frame by default; a simulated episode may keep only some (`runtime.frame_every`)."""
    kept = [s.observation.images for s in episode.steps if s.observation.images]
    if not kept:
        raise ValueError(f"episode {episode.meta.episode_id} has no camera images to export")
    cameras = sorted(kept[0])
    frames = np.stack([np.concatenate([images[c] for c in cameras], axis=1) for images in kept])
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))


def export_video(episode: Episode, path: str | Path, fps: float = 10.0) -> Path:
    """Write the episode's frames to `path` (its suffix picks the container, e.g. .mp4)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = episode_frames(episode)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path
