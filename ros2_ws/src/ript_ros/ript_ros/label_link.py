"""The tablet app's link to the policy node over ROS 2 (the `ros` robot link).

It follows the policy node's `~/episode_status` (transient local, so the newest status
arrives at once) and one camera, and calls the node's `~/start` and `~/software_stop`
services. It spins its own node in a background executor unless given one to share (the
label_app node passes itself).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from ript_robot.labeling.robot import RobotLink
from ript_ros.convert import InputError, any_image_to_rgb, subscribe_camera
from ript_ros.policy_node import LATCHED


class RosRobotLink(RobotLink):
    """The policy node as the tablet sees it, over DDS."""

    def __init__(
        self,
        node: Node | None = None,
        policy_node: str = "policy",
        camera_topic: str = "camera/top/image_raw",
        image_transport: str = "raw",
        timeout_s: float = 3.0,
    ):
        """policy_node: the policy node's name (its services and status live under it); camera_topic: the
        live view's image topic (`<topic>/compressed` with image_transport 'compressed'); timeout_s: service calls."""
        self._own = node is None
        if self._own:
            if not rclpy.ok():
                rclpy.init()
            node = rclpy.create_node("label_app_link")
            self._executor = SingleThreadedExecutor()
            self._executor.add_node(node)
            self._spin = threading.Thread(target=self._executor.spin, name="label-link", daemon=True)
            self._spin.start()
        self.node = node
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._frame: np.ndarray | None = None
        base = f"/{policy_node.strip('/')}"
        node.create_subscription(String, f"{base}/episode_status", self._on_status, LATCHED)
        subscribe_camera(node, camera_topic, image_transport, self._on_frame)
        self._start = node.create_client(Trigger, f"{base}/start")
        self._stop = node.create_client(SetBool, f"{base}/software_stop")

    def _on_status(self, msg: String) -> None:
        with self._lock:
            self._status = json.loads(msg.data)

    def _on_frame(self, msg: Image | CompressedImage) -> None:
        try:
            image = any_image_to_rgb("live view", msg)
        except InputError as exc:
            self.node.get_logger().warning(f"live view: {exc}", throttle_duration_sec=10.0)
            return
        with self._lock:
            self._frame = image

    def status(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self._status is None else dict(self._status)

    def frame(self) -> np.ndarray | None:
        with self._lock:
            return self._frame

    def _call(self, client: Any, request: Any) -> tuple[bool, str]:
        if not client.wait_for_service(timeout_sec=self.timeout_s):
            return False, f"the policy node's {client.srv_name} service is not available: is the policy node running?"
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.timeout_s):
            return False, f"{client.srv_name} did not answer within {self.timeout_s:.0f} s"
        response = future.result()
        return bool(response.success), response.message

    def start(self) -> tuple[bool, str]:
        return self._call(self._start, Trigger.Request())

    def software_stop(self, engage: bool) -> tuple[bool, str]:
        return self._call(self._stop, SetBool.Request(data=engage))

    def close(self) -> None:
        if self._own:
            self._executor.shutdown()
            self.node.destroy_node()
