"""The `Policy` contract shared by every policy family, the runtime and the trainer.

RIPT needs three things from a policy: sample an action chunk with the log-probability of
exactly what was sampled (`act`), re-score stored chunks under the current parameters for
the PPO ratio (`log_prob`), and a behaviour-cloning loss for SFT (`bc_loss`). Weights are
saved as safetensors beside a JSON config and a version, never pickled, so a checkpoint
from the store cannot run code when loaded.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ript_robot.config import PolicyConfig
from ript_robot.types import ActionChunk, Observation

Batch = dict[str, torch.Tensor]
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "policy.json"


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-action values (B, H) over the actions `mask` (B, H) keeps (all when None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit the policy that tries to load it."""


class Policy(nn.Module, ABC):
    """A stochastic chunked policy: observation -> distribution over (H, A) action chunks."""

    family: str = ""
    version: int = 0
    # What the policy takes, declared by every family (the ROS node checks its inputs against them):
    image_shape: tuple[int, int]  # (height, width) of each camera's RGB image
    state_dim: int  # length of the proprioceptive state
    action_dim: int  # length of one action
    log_prob_span: int = 1  # actions one log-prob covers; a token policy's sits on its span's first action

    @property
    @abstractmethod
    def chunk_size(self) -> int:
        """H: actions per chunk."""

    @abstractmethod
    def preprocess(self, observations: Sequence[Observation]) -> Batch:
        """Stack observations into the tensors `log_prob` and `bc_loss` take (images stay uint8)."""

    @abstractmethod
    def log_prob(self, batch: Batch, actions: torch.Tensor) -> torch.Tensor:
        """Log density (B, H) of each action of chunks `actions` (B, H, A) under the current parameters.

        Summed over H it is the chunk's log density.
        """

    sft_stages: tuple[str, ...] = ("policy",)  # behaviour-cloning stages, trained in this order
    finetune_stages: tuple[str, ...] = ("policy",)  # the stages SFT of an already pretrained policy runs

    @abstractmethod
    def bc_loss(
        self, batch: Batch, actions: torch.Tensor, stage: str = "policy", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scalar behaviour-cloning loss on expert chunks (B, H, A) for one of `sft_stages`; mask (B, H):
        1 where the target action was recorded, 0 where it pads past a demonstration's end (None: all real)."""

    def rl_parameters(self) -> list[nn.Parameter]:
        """The parameters RIPT's PPO update trains: all of them, unless a family keeps some frozen."""
        return list(self.parameters())

    @abstractmethod
    def sample(self, batch: Batch, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunks (B, H, A) and their per-action log densities (B, H); deterministic: the mode."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy's architecture (JSON-serializable)."""

    @torch.no_grad()
    def act(self, observations: Sequence[Observation], deterministic: bool = False) -> list[ActionChunk]:
        """Plan one chunk per observation (a batch of one on a robot, of N in simulation)."""
        was_training = self.training
        self.eval()
        actions, log_probs = self.sample(self.preprocess(observations), deterministic)
        self.train(was_training)
        actions_np, log_probs_np = actions.cpu().numpy(), log_probs.cpu().numpy()
        return [
            ActionChunk(actions=actions_np[i], step_log_prob=log_probs_np[i], policy_version=self.version)
            for i in range(len(observations))
        ]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint holds: all of them, unless a family rebuilds some from its config."""
        return self.state_dict()

    def save(self, directory: str | Path) -> Path:
        """Write `model.safetensors` and `policy.json` (family, version, config) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.checkpoint_state().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"family": self.family, "version": str(self.version)})
        meta = {"family": self.family, "version": self.version, "config": self.config_dict()}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    def load_weights(self, directory: str | Path) -> None:
        """Load safetensors weights into this policy; a clear error when they do not fit."""
        path = Path(directory) / WEIGHTS_FILE
        if not path.is_file():
            raise CheckpointError(f"no {WEIGHTS_FILE} in {directory}")
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
        self.load_tensors(state, str(path))

    def load_tensors(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a checkpoint's tensors (`checkpoint_state`); a clear error naming `source` when they do not fit."""
        expected = self.checkpoint_state()
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        if missing or unexpected:
            raise CheckpointError(
                f"{source} does not fit a {self.family} policy with this config: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        for key, tensor in expected.items():
            if state[key].shape != tensor.shape:
                raise CheckpointError(
                    f"{source}: '{key}' has shape {tuple(state[key].shape)}, the policy expects {tuple(tensor.shape)}; "
                    "was it saved with another config?"
                )
        self.load_state_dict(state, strict=False)  # exactly the checkpoint's keys, checked above


class ConfiguredPolicy(Policy):
    """A family built from a `PolicyConfig` for given cameras, state and action sizes (every family here)."""

    def __init__(
        self,
        config: PolicyConfig,
        image_shape: tuple[int, int],
        state_dim: int,
        action_dim: int,
        cameras: Sequence[str] = (),
    ):
        """image_shape: (height, width) of every RGB camera; state_dim, action_dim >= 1;
        cameras: the camera names, in the order the policy reads them (empty: one camera,
        whatever its name)."""
        super().__init__()
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim}, {action_dim}")
        self.config = config
        self.image_shape = tuple(image_shape)
        self.cameras = tuple(cameras)
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.build()

    @abstractmethod
    def build(self) -> None:
        """Create the family's modules (sized by self.config, the image shape, state and action dims)."""

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    def config_dict(self) -> dict[str, Any]:
        return {
            "policy": self.config.model_dump(mode="json"),
            "image_shape": list(self.image_shape),
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "cameras": list(self.cameras),
        }

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> ConfiguredPolicy:
        return cls(
            PolicyConfig.model_validate(config["policy"]),
            tuple(config["image_shape"]),
            config["state_dim"],
            config["action_dim"],
            config.get("cameras", ()),  # checkpoints from before multi-camera support: one camera
        )

    def stack_observations(self, observations: Sequence[Observation]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, N cameras, H, W, 3) uint8 and states (B, state_dim) float32, checked against the policy."""
        name = type(self).__name__
        images, states = [], []
        for obs in observations:
            if self.cameras and set(obs.images) != set(self.cameras):
                raise ValueError(f"{name} takes the cameras {list(self.cameras)}, got {sorted(obs.images)}")
            if not self.cameras and len(obs.images) != 1:
                raise ValueError(f"{name} takes one camera, got {sorted(obs.images)}")
            views = [obs.images[c] for c in self.cameras] if self.cameras else list(obs.images.values())
            for image in views:
                if image.dtype != np.uint8 or image.shape != (*self.image_shape, 3):
                    raise ValueError(
                        f"image must be uint8 {(*self.image_shape, 3)} RGB, got {image.dtype} {image.shape}; "
                        "convert the camera's encoding to rgb8 and resize before the policy"
                    )
            if obs.state.shape != (self.state_dim,):
                raise ValueError(f"state must have shape ({self.state_dim},), got {obs.state.shape}")
            images.append(np.stack(views))
            states.append(obs.state)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(states).astype(np.float32))


def read_policy_meta(directory: str | Path) -> dict[str, Any]:
    """The family, version and config saved beside a checkpoint's weights."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CONFIG_FILE} in {directory}: is this a ript-robot checkpoint folder?")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("family", "version", "config"):
        if key not in meta:
            raise CheckpointError(f"{path} lacks '{key}'")
    return meta
