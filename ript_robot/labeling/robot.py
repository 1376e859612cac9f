"""What the tablet app needs from the robot, and how it finds the implementation.

The app shows the episode in progress and starts the next one or stops the arm, but the
core never imports ROS: it talks to a `RobotLink`. Links register under the entry-point
group `ript_robot.robot_links`: `ros` (the `ript_ros` package: the policy node's status
topic, a camera topic and its services) and `sim` (`sim_bridge`: the built-in task run by
the shared runtime, for trying the tablet without an arm). Without a link the app labels
the store's episodes and shows no live view.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from ript_robot.config import ConfigError

GROUP = "ript_robot.robot_links"


class RobotLink(ABC):
    """The policy node as the tablet sees it. Implementations are thread-safe."""

    @abstractmethod
    def status(self) -> dict[str, Any] | None:
        """The policy node's latest episode status (its ~/episode_status JSON), or None before the first."""

    @abstractmethod
    def frame(self) -> np.ndarray | None:
        """The newest camera frame, RGB uint8 (H, W, 3), or None before the first."""

    @abstractmethod
    def start(self) -> tuple[bool, str]:
        """Start the next episode (the policy node's ~/start); (accepted, message)."""

    @abstractmethod
    def software_stop(self, engage: bool) -> tuple[bool, str]:
        """Engage (True) or release (False) the latched software stop; (accepted, message)."""

    def close(self) -> None:  # noqa: B027 - most links hold nothing to release
        """Release what the link holds (threads, nodes)."""


def load_link(name: str, options: dict[str, Any]) -> RobotLink:
    """The link registered as `name`, built with `options` (its own keyword arguments)."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in found:
        hint = " (build and source ros2_ws, or pip install -e ros2_ws/src/ript_ros)" if name == "ros" else ""
        raise ConfigError(f"no robot link named {name!r}{hint}; installed: {sorted(found) or 'none'}")
    return found[name].load()(**options)
