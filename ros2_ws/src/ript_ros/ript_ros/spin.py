"""How every ript_ros node process starts and ends: a clear message on bad parameters, a clean Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from ript_robot.config import ConfigError

N = TypeVar("N", bound=Node)


def create_or_exit(factory: Callable[[], N], name: str) -> N:
    """Build the node; on a configuration problem print it (no traceback) and exit with status 2."""
    try:
        return factory()
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        sys.exit(2)


def spin(node: Node, executor: Executor | None = None, close: Callable[[], None] | None = None) -> None:
    """Spin until Ctrl-C or a shutdown; then `close` (release what the node holds), destroy it, end ROS."""
    try:
        if executor is None:
            rclpy.spin(node)
        else:
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C shuts the context down at once: a callback running then (a timer publishing) fails with
        # "context is invalid". That is the shutdown asked for, not a fault; anything else still is.
        if rclpy.ok(context=node.context):
            raise
    finally:
        if close is not None:
            close()
        node.destroy_node()
        rclpy.try_shutdown()
