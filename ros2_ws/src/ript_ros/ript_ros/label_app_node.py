"""The label_app node: the operator's tablet app on the robot workstation, linked to the policy node.

It serves `ript_robot.labeling` (the same app as `ript label-app`) from a background thread
and links it to the policy node over ROS 2 (`RosRobotLink`, sharing this node): the live
view follows the policy node's status and camera, Start and STOP call its services. The
pairing code is printed to the launch log. Parameters: `LabelAppNodeConfig`.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from ript_robot.labeling.server import LabelServer, build_app
from ript_ros.config import LabelAppNodeConfig
from ript_ros.label_link import RosRobotLink
from ript_ros.params import declare, read
from ript_ros.spin import create_or_exit, spin


class LabelAppNode(Node):
    """Declares the app's parameters, serves the app, and links it to the policy node."""

    def __init__(self, name: str = "label_app", **kwargs: Any):
        super().__init__(name, **kwargs)
        declare(self, LabelAppNodeConfig)
        self.cfg: LabelAppNodeConfig = read(self, LabelAppNodeConfig)
        t = self.cfg.topics
        self.link = RosRobotLink(
            node=self,
            policy_node=self.cfg.policy_node,
            camera_topic=t.image_topic.format(camera=self.cfg.camera),
            image_transport=t.image_transport,
        )
        app = build_app(self.cfg.app, self.cfg.store, self.cfg.detector, self.link)
        self.server = LabelServer(app, self.cfg.app.host, self.cfg.app.port).start()
        self.get_logger().info(f"tablet app on {self.server.url} for store {self.cfg.store.uri}")

    def close(self) -> None:
        self.server.stop()


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run ript_ros label_app`."""
    rclpy.init(args=sys.argv if args is None else args)
    node = create_or_exit(LabelAppNode, "label_app")
    spin(node, MultiThreadedExecutor(num_threads=2), close=node.close)


if __name__ == "__main__":
    main()
