"""Shared fixtures: a tiny real policy and the built-in pick env at a small image size."""

from __future__ import annotations

import importlib.util
import random
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from ript_robot.config import OftConfig, OpenVlaOftConfig, PolicyConfig, QuestConfig
from ript_robot.data.local_s3 import create_bucket, s3_environment, start_s3_server
from ript_robot.envs.pick import PickEnv, make_contexts
from ript_robot.policies.base import ConfiguredPolicy
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.policies.flow import FlowPolicy, FlowVlmPolicy
from ript_robot.policies.oft import OftPolicy
from ript_robot.policies.openvla_oft import OpenVlaOftPolicy
from ript_robot.policies.quest import QuestPolicy
from ript_robot.policies.tiny_openvla import save_tiny_openvla_oft
from ript_robot.policies.tiny_vlm import save_tiny_vlm
from ript_robot.rl.ppo import RolloutBatch
from ript_robot.types import ActionChunk, Context, Episode, EpisodeMeta, Label, Observation

# The tiny models here are far faster on one thread: intra-op threading only adds overhead.
torch.set_num_threads(1)

# the ROS 2 tests need rclpy: the `ros` extra and ros2_ws/src/ript_ros (the README's test command installs both)
if importlib.util.find_spec("rclpy") is None or importlib.util.find_spec("ript_ros") is None:
    collect_ignore_glob = ["ros/*"]

# the tablet app's fixtures: its server, the simulated arm, headless Chromium
pytest_plugins = ["tablet"]

IMAGE_SIZE = 32
TINY = {"hidden_dim": 32, "channels": 4, "keypoints": 4, "chunk_size": 4}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--learning-seed",
        type=int,
        default=0,
        help="seed the learning tests train with (`benchmarks/ci.py learning` runs them under several)",
    )


@pytest.fixture(scope="session")
def learning_seed(request: pytest.FixtureRequest) -> int:
    """The seed a learning test (marked `learning`) trains with: --learning-seed, 0 by default."""
    return request.config.getoption("--learning-seed")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@cache
def tiny_vlm() -> Path:
    """A tiny random VLM folder for the oft family, written once per test session (nothing is downloaded)."""
    return save_tiny_vlm(Path(tempfile.mkdtemp(prefix="tiny_vlm_")) / "vlm")


@cache
def tiny_openvla() -> Path:
    """A tiny random OpenVLA-OFT checkpoint in the released layout, for the PickEnv at IMAGE_SIZE (once a session)."""
    return save_tiny_openvla_oft(Path(tempfile.mkdtemp(prefix="tiny_openvla_")) / "openvla", image_size=IMAGE_SIZE)


def tiny_policy(seed: int = 0, family: str = "chunked", **overrides) -> ConfiguredPolicy:
    """A small policy of `family` for the PickEnv at IMAGE_SIZE, initialized from `seed`.

    quest: 2 actions per token; oft and flow_vlm: LoRA rank 4 on the tiny VLM's attention and MLP layers."""
    torch.manual_seed(seed)
    if family == "quest":
        quest = QuestConfig(**{"actions_per_token": 2, **overrides.pop("quest", {})})
        return QuestPolicy(
            PolicyConfig(**{**TINY, **overrides}, family="quest", quest=quest), (IMAGE_SIZE, IMAGE_SIZE), 3, 3
        )
    if family == "openvla_oft":
        oft = OftConfig(
            **{"backbone": str(tiny_openvla()), "lora_rank": 4, "lora_alpha": 8, **overrides.pop("oft", {})}
        )
        settings = OpenVlaOftConfig(**{"cameras": ["top"], **overrides.pop("openvla_oft", {})})
        config = PolicyConfig(**{**TINY, **overrides}, family=family, oft=oft, openvla_oft=settings)
        return OpenVlaOftPolicy(config, (IMAGE_SIZE, IMAGE_SIZE), 3, 3)
    if family in ("oft", "flow_vlm"):
        oft = OftConfig(**{"backbone": str(tiny_vlm()), "lora_rank": 4, "lora_alpha": 8, **overrides.pop("oft", {})})
        config = PolicyConfig(**{**TINY, **overrides}, family=family, oft=oft)
        return (OftPolicy if family == "oft" else FlowVlmPolicy)(config, (IMAGE_SIZE, IMAGE_SIZE), 3, 3)
    if family == "flow":
        return FlowPolicy(PolicyConfig(**{**TINY, **overrides}, family="flow"), (IMAGE_SIZE, IMAGE_SIZE), 3, 3)
    return ChunkedPolicy(PolicyConfig(**{**TINY, **overrides}), (IMAGE_SIZE, IMAGE_SIZE), 3, 3)


def chunk_extras(chunks: Sequence[ActionChunk]) -> dict[str, torch.Tensor] | None:
    """The chunks' re-scoring extras stacked by name, as the PPO batch carries them (None when they have none)."""
    if not chunks or not chunks[0].extras:
        return None
    return {name: torch.from_numpy(np.stack([c.extras[name] for c in chunks])) for name in chunks[0].extras}


def make_env(max_steps: int = 40) -> PickEnv:
    return PickEnv(image_size=IMAGE_SIZE, max_steps=max_steps)


def observations(n: int = 3) -> list[Observation]:
    """First observations of n layouts of scene lab_a, at IMAGE_SIZE."""
    env = make_env()
    return [env.reset(c) for c in make_contexts("lab_a", range(n))[:n]]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of a module's tensors, to see later which of them changed."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """Names of the module's tensors that differ from the snapshot `before`."""
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def acted_batch(policy: ConfiguredPolicy, obs: list[Observation], advantages: list[float]) -> RolloutBatch:
    """A PPO batch of the chunks the policy samples for `obs`, every action executed, with these advantages."""
    chunks = policy.act(obs)
    return RolloutBatch(
        policy.preprocess(obs),
        torch.from_numpy(np.stack([c.actions for c in chunks])),
        torch.from_numpy(np.stack([c.step_log_prob for c in chunks])),
        torch.tensor(advantages),
        torch.ones(len(obs), policy.chunk_size),
    )


def assert_same_acts(policy: ConfiguredPolicy, other: ConfiguredPolicy, obs: list[Observation], atol: float) -> None:
    """Both policies sample the same chunks, with the same log-probabilities, from the same seed."""
    torch.manual_seed(1)
    first = policy.act(obs)
    torch.manual_seed(1)
    second = other.act(obs)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a.actions, b.actions, atol=atol, rtol=0)
        np.testing.assert_allclose(a.step_log_prob, b.step_log_prob, atol=atol, rtol=0)


def fake_episode(context: Context, reward: float | None, num_chunks: int = 0, chunk_size: int = 4) -> Episode:
    """A real Episode object with a predetermined label (None: unlabeled)."""
    label = None if reward is None else Label(success=bool(reward), source="sim")
    meta = EpisodeMeta(
        episode_id=f"{context.context_id}-{time.monotonic_ns()}",
        context=context,
        policy_version=0,
        robot_id="test",
        start_time=0.0,
        label=label,
    )
    chunks = [
        ActionChunk(np.zeros((chunk_size, 3), np.float32), np.zeros(chunk_size, np.float32)) for _ in range(num_chunks)
    ]
    return Episode(meta=meta, steps=[], chunks=chunks, chunk_observations=[])


@pytest.fixture
def policy() -> ChunkedPolicy:
    return tiny_policy()


# --- a real S3-compatible server (moto) on 127.0.0.1 for the store's object-storage tests ---


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server, started for the test session on a free loopback port."""
    proc, endpoint = start_s3_server()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3_uri(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 server, configured through the usual AWS_* variables."""
    for key, value in s3_environment(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    bucket = f"ript-{uuid.uuid4().hex[:12]}"
    create_bucket(s3_endpoint, bucket)
    return f"s3://{bucket}/store"


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a local directory and on the S3-compatible server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_uri")
