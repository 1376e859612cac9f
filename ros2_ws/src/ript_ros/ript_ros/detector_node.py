"""The detector node: the vision success detector on the arm's live camera.

While the policy node runs an episode, every `every_n_frames`-th frame is judged by the
core `SuccessDetector` and its success probability published on `~/success_probability`
(std_msgs/Float64). In `auto` mode it also answers on the outcome topic, which the policy
node records as a `detector` label (set the policy node's `label_source` to `detector`):
during the episode once a frame is a confident success (the task is done: the episode
ends early), and when the episode reaches its step limit, with its verdict on the final
frame if that verdict is confident. Otherwise it stays silent and the operator labels the
episode on the tablet. In `suggest` mode it only publishes probabilities.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float64, String

from ript_robot.config import ConfigError
from ript_robot.success.detector import SuccessDetector
from ript_ros.config import DetectorNodeConfig
from ript_ros.convert import InputError, any_image_to_rgb, subscribe_camera
from ript_ros.params import declare, read
from ript_ros.policy_node import LATCHED, RELIABLE
from ript_ros.spin import create_or_exit, spin


class DetectorNode(Node):
    """Judges the policy node's episodes from the camera; see the module docstring."""

    def __init__(self, name: str = "detector", **kwargs: Any):
        super().__init__(name, **kwargs)
        declare(self, DetectorNodeConfig)
        cfg = self.cfg = read(self, DetectorNodeConfig)
        if not cfg.detector.checkpoint:
            raise ConfigError("detector.checkpoint is empty: train one with `ript detector --out DIR` and name DIR")
        self.detector = SuccessDetector.load(cfg.detector.checkpoint)
        self.mode = cfg.detector.mode
        t = cfg.topics
        camera = self.detector.camera if self.detector.camera in t.cameras else t.cameras[0]
        subscribe_camera(self, t.image_topic.format(camera=camera), t.image_transport, self._on_frame)
        base = f"/{cfg.policy_node.strip('/')}"
        self.create_subscription(String, f"{base}/episode_status", self._on_status, LATCHED)
        self.outcome_pub = self.create_publisher(Bool, t.outcome_topic, RELIABLE)
        self.probability_pub = self.create_publisher(Float64, "~/success_probability", RELIABLE)
        self.phase = "idle"
        self.episode_id: str | None = None
        self.instruction = ""
        self.frame: np.ndarray | None = None
        self.frames = 0
        self.answered = False  # this episode's outcome went out
        self.judged = 0

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        if status["episode_id"] != self.episode_id:
            self.episode_id, self.answered, self.frames = status["episode_id"], False, 0
        self.phase = status["state"]
        if status.get("context"):
            self.instruction = status["context"]["instruction"]
        if self.phase == "ending" and self.frame is not None:
            self._judge(self.frame, final=True)  # max steps: the policy node waits for an outcome

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        try:
            self.frame = any_image_to_rgb("detector", msg)
        except InputError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        if self.phase != "running":
            return
        self.frames += 1
        if self.frames % self.cfg.every_n_frames == 0:
            self._judge(self.frame, final=False)

    def _judge(self, frame: np.ndarray, final: bool) -> None:
        p = float(self.detector.probability([frame], [self.instruction])[0])
        self.judged += 1
        self.probability_pub.publish(Float64(data=p))
        if self.mode != "auto" or self.answered:
            return
        verdict = self.detector.judge(p)
        if not verdict["confident"]:
            return
        if final or (verdict["success"] and self.cfg.end_on_success):
            self.outcome_pub.publish(Bool(data=verdict["success"]))
            self.answered = True
            self.get_logger().info(
                f"episode {self.episode_id}: {'success' if verdict['success'] else 'failure'} "
                f"(p={p:.2f}, {'final frame' if final else 'mid-episode'})"
            )


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run ript_ros detector_node`."""
    rclpy.init(args=sys.argv if args is None else args)
    spin(create_or_exit(DetectorNode, "detector_node"))


if __name__ == "__main__":
    main()
