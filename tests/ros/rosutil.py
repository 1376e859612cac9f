"""Helpers for the ROS 2 tests: an isolated DDS domain, an executor thread, waiting on topics.

Every test process gets its own ROS_DOMAIN_ID and discovery limited to localhost, so two
test runs on one machine cannot hear each other. Nodes run in a background executor; the
test thread publishes as a camera driver would and waits for what the policy node sends.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def ros_context() -> Iterator[Context]:
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@contextmanager
def spinning(context: Context, *nodes: Node) -> Iterator[None]:
    """Spin each node in its own executor thread (as if in its own process) until the block ends.

    The GIL is handed over every 0.5 ms, as the policy node's process does (`ript_ros.policy_node.main`)."""
    sys.setswitchinterval(0.0005)
    executors = []
    for node in nodes:
        threads = getattr(node, "EXECUTOR_THREADS", 1)  # the policy node's callback groups need several
        executor = (
            MultiThreadedExecutor(num_threads=threads, context=context)
            if threads > 1
            else SingleThreadedExecutor(context=context)
        )
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        executors.append((executor, thread))
    try:
        yield
    finally:
        for executor, thread in executors:
            executor.shutdown()
            thread.join(timeout=5)
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()  # the policy node commits what its writer holds
            node.destroy_node()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def call(node: Node, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
    """Call a service from the test thread (the node spins elsewhere) and return the response."""
    client = node.create_client(srv_type, name)
    wait_for(client.service_is_ready, timeout, f"service {name}")
    future = client.call_async(request)
    wait_for(future.done, timeout, f"the response of {name}")
    node.destroy_client(client)
    return future.result()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested parameter tree (as in a ROS YAML file) as dotted names: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
