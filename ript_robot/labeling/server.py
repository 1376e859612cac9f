"""Serving the tablet app: `ript label-app`, the ROS label_app node and the tests start it here.

`LabelServer` runs uvicorn in a background thread (so a ROS node can spin beside it) and
announces each pairing code on the workstation's terminal. `build_app` wires the store,
the robot link and the detector from one `LabelAppConfig`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import uvicorn

from ript_robot.config import DetectorConfig, LabelAppConfig, StoreConfig
from ript_robot.data.store import EpisodeStore
from ript_robot.labeling.app import LabelApp
from ript_robot.labeling.auth import Pairing
from ript_robot.labeling.robot import RobotLink
from ript_robot.labeling.routes import fastapi_app


def announce_code(config: LabelAppConfig) -> Callable[[str, float], None]:
    """Print each new pairing code where the workstation's user sees it."""
    host = "<this machine's address>" if config.host in ("0.0.0.0", "::") else config.host

    def show(code: str, ttl_s: float) -> None:
        print(
            f"[label-app] pair a tablet: open http://{host}:{config.port} and enter {code[:3]} {code[3:]} "
            f"(valid {ttl_s / 60:.0f} min, once)",
            file=sys.stderr,
            flush=True,
        )

    return show


def build_app(
    config: LabelAppConfig, store_config: StoreConfig, detector: DetectorConfig, robot: RobotLink | None = None
) -> LabelApp:
    """The app on the configured store, with the detector when one is configured and not off."""
    store = EpisodeStore(store_config.uri, create=True)
    service = None
    if detector.mode != "off" and detector.checkpoint:
        from ript_robot.success.detector import DetectorService, SuccessDetector

        service = DetectorService(store, SuccessDetector.load(detector.checkpoint), detector.mode)
    return LabelApp(store, config, robot, service, Pairing.for_app(config, announce_code(config)))


class LabelServer:
    """uvicorn serving a `LabelApp` from a background thread."""

    def __init__(self, app: LabelApp, host: str, port: int):
        self.app = app
        self.api = fastapi_app(app)  # its `openapi()` is the schema the API fuzzing generates requests from
        self.server = uvicorn.Server(uvicorn.Config(self.api, host=host, port=port, log_level="warning"))
        self._thread = threading.Thread(target=self.server.run, name="label-app", daemon=True)

    @property
    def url(self) -> str:
        socket = self.server.servers[0].sockets[0].getsockname()
        return f"http://{socket[0]}:{socket[1]}"

    def start(self, timeout_s: float = 10.0) -> LabelServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the label app did not start on {self.server.config.host}:{self.server.config.port}"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10.0)
