"""Fixtures of the tablet app and detector tests (a pytest plugin of tests/conftest.py): a real server
on loopback, the simulated arm, headless Chromium, a trained success detector."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import IMAGE_SIZE, TINY, make_env, tiny_policy
from synthetic import synthetic_episode

from ript_robot.config import DetectorConfig, QuickstartConfig, SFTConfig
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import expert_action, make_contexts
from ript_robot.labeling.app import LabelApp
from ript_robot.labeling.server import LabelServer, build_app
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.policies.published import publish_policy
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from ript_robot.success.detector import SuccessDetector, episode_examples, fit_detector
from sim_bridge.label_robot import SimRobot
from sim_bridge.pick_outcomes import outcome_episodes

DETECTOR_EPISODES, DETECTOR_STEPS = 3000, 1000
# Debian's (apt-get install chromium; scripts/test installs it), or RIPT_CHROMIUM; playwright's own download is not
# reachable here
CHROMIUM = os.environ.get("RIPT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def sft_policy() -> ChunkedPolicy:
    """A tiny policy cloned from a few expert demonstrations: it reaches for blocks, so episodes last."""
    policy = tiny_policy(seed=0)
    demos = record_demonstrations(make_env(), make_contexts("workcell", range(8)), expert_action)
    behaviour_cloning(policy, chunk_dataset(policy, demos), SFTConfig(steps=150, lr=1e-3), progress=False)
    return policy


@dataclass
class Served:
    app: LabelApp
    server: LabelServer
    store: EpisodeStore
    robot: SimRobot | None

    @property
    def url(self) -> str:
        return self.server.url


def quickstart_config(store_uri: str) -> QuickstartConfig:
    cfg = QuickstartConfig.model_validate(
        {"task": {"image_size": IMAGE_SIZE}, "policy": TINY, "runtime": {"execute_steps": TINY["chunk_size"]}}
    )
    cfg.store.uri = store_uri
    cfg.label_app.undo_window_s = 30.0  # a loaded CI machine must not run out of undo time mid-test
    cfg.label_app.poll_ms = 200
    return cfg


@pytest.fixture
def served(tmp_path: Path, sft_policy: ChunkedPolicy) -> Iterator[Served]:
    """The app on a store with a published policy, the simulated arm behind it, on a free port."""
    cfg = quickstart_config(str(tmp_path / "store"))
    store = EpisodeStore(cfg.store.uri, create=True)
    publish_policy(store.backend, sft_policy)
    robot = SimRobot(cfg.store.uri, cfg, deterministic=True)  # the mean action: the cloned policy reaches, then grasps
    app = build_app(cfg.label_app, cfg.store, cfg.detector, robot)
    server = LabelServer(app, "127.0.0.1", 0).start()
    yield Served(app, server, app.store, robot)
    server.stop()
    robot.close()


@pytest.fixture
def store_served(tmp_path: Path) -> Iterator[Served]:
    """The app on a store of two unlabeled episodes, no robot behind it, on a free port."""
    cfg = quickstart_config(str(tmp_path / "store"))
    store = EpisodeStore(cfg.store.uri, create=True)
    for seed in range(2):
        store.write_episode(synthetic_episode(f"workcell/{seed}", steps=2, success=None, seed=seed, image_size=32))
    app = build_app(cfg.label_app, cfg.store, cfg.detector)
    server = LabelServer(app, "127.0.0.1", 0).start()
    yield Served(app, server, app.store, None)
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: run scripts/test, or set RIPT_CHROMIUM to yours")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tablet(browser):
    """A 10-inch tablet's viewport with touch."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, has_touch=True)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def trained_detector(learning_seed: int) -> tuple[SuccessDetector, dict]:
    """A success detector trained on the simulator's labels of scripted built-in-task episodes."""
    episodes = outcome_episodes(DETECTOR_EPISODES, IMAGE_SIZE, seed=learning_seed)
    config = DetectorConfig(image_size=IMAGE_SIZE, steps=DETECTOR_STEPS)
    return fit_detector(episode_examples(episodes, config, "top"), config, "top", seed=learning_seed, progress=False)
