"""The `Policy` contract shared by every policy family, the runtime and the trainer.

RIPT needs three things from a policy: sample an action chunk with the log-probability of
exactly what was sampled (`act`), re-score stored chunks under the current parameters for
the PPO ratio (`log_prob`), and a behaviour-cloning loss for SFT (`bc_loss`). A sampled
action beyond the policy's action bounds is sent as the bound (the safety filter clips it), so
continuous families score what was sent: the density inside the bounds, the probability mass
beyond a bound at it (`bounded_log_prob`, a censored distribution). Weights are
saved as safetensors beside a JSON config and a version, never pickled, so a checkpoint
from the store cannot run code when loaded.
"""

from __future__ import annotations

import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributions import Distribution, Laplace, Normal

from ript_robot.config import PolicyConfig
from ript_robot.types import ActionChunk, CheckpointError, Observation

Batch = dict[str, torch.Tensor]
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "policy.json"


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-action values (B, H) over the actions `mask` (B, H) keeps (all when None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _standard_log_cdf(dist: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log P(X <= loc + z * scale) for a Normal or Laplace `dist` (both symmetric: the upper tail is z -> -z)."""
    if isinstance(dist, Normal):
        return torch.special.log_ndtr(z)
    if isinstance(dist, Laplace):  # each branch clamped so the unused one stays finite (no NaN gradients)
        return torch.where(z < 0, z.clamp(max=0.0) - np.log(2.0), torch.log1p(-0.5 * torch.exp(-z.clamp(min=0.0))))
    raise TypeError(f"bounded_log_prob takes a Normal or Laplace distribution, got {type(dist).__name__}")


def bounded_log_prob(
    dist: Distribution, actions: torch.Tensor, low: float | torch.Tensor, high: float | torch.Tensor
) -> torch.Tensor:
    """Per-dimension log-likelihood (B, H, A) of the command clip(actions, low, high) the arm receives.

    Inside the bounds it is the density; at or beyond `high` it is log P(a >= high), at or beyond
    `low` log P(a <= low): the law of the clipped action, so PPO never raises the density of a
    value that was not sent, and its ratio stays that of the command the arm executed.
    """
    inside = dist.log_prob(actions)
    loc, scale = dist.loc, dist.scale  # type: ignore[attr-defined]  # Normal and Laplace both have them
    below = _standard_log_cdf(dist, (low - loc) / scale)
    above = _standard_log_cdf(dist, (loc - high) / scale)
    return torch.where(actions >= high, above, torch.where(actions <= low, below, inside))


class Policy(nn.Module, ABC):
    """A stochastic chunked policy: observation -> distribution over (H, A) action chunks."""

    family: str = ""
    version: int = 0
    # What the policy takes, declared by every family (the ROS node checks its inputs against them):
    image_shape: tuple[int, int]  # (height, width) of each camera's RGB image
    state_dim: int  # length of the proprioceptive state
    action_dim: int  # length of one action
    log_prob_span: int = 1  # actions one log-prob covers; a token policy's sits on its span's first action
    action_low: float = -1.0  # the action bounds: a sampled action beyond one is sent as the bound
    action_high: float = 1.0

    @property
    @abstractmethod
    def chunk_size(self) -> int:
        """H: actions per chunk."""

    @abstractmethod
    def preprocess(self, observations: Sequence[Observation]) -> Batch:
        """Stack observations into the tensors `log_prob` and `bc_loss` take (images stay uint8)."""

    @abstractmethod
    def log_prob(
        self, batch: Batch, actions: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Log-likelihood (B, H) of each action of chunks `actions` (B, H, A), as sampled, under the current
        parameters: that of the command sent, clip(action, action_low, action_high) (`bounded_log_prob`).
        extras: the chunks' `ActionChunk.extras`, stacked (B, ...), for families that need more than the actions.

        Summed over H it is the chunk's log-likelihood.
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
        """Chunks (B, H, A), unclipped, and their per-action log-likelihoods as `log_prob` scores them (B, H);
        deterministic: the mode."""

    @property
    def needs_statistics(self) -> bool:
        """Whether the policy normalizes and waits for `fit_statistics` (never, unless a family normalizes)."""
        return False

    def fit_statistics(self, states: np.ndarray, actions: np.ndarray) -> None:
        raise ValueError(f"the {self.family} policy does not normalize its inputs")

    def to_policy_units(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot-unit actions in the units the family's distribution is over (the same, unless it normalizes)."""
        return actions

    def to_robot_units(self, actions: torch.Tensor) -> torch.Tensor:
        return actions

    def command_log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """Per-action log-likelihood (B, H) of the commands sent for sampled `actions` (B, H, A, in the policy's
        units) under a continuous family's per-dimension `dist`: `bounded_log_prob` at this policy's bounds,
        summed over A; a dimension the arm reads only by its sign (`binary_dims`, e.g. a gripper that closes
        above 0) is scored by the probability of that sign, the law of the command it received. A normalizing
        family scores in its own units: the constant Jacobian cancels in every ratio RIPT forms."""
        bounds = torch.tensor([self.action_low, self.action_high], dtype=actions.dtype, device=actions.device)
        low, high = self.to_policy_units(bounds[:, None].expand(2, actions.shape[-1]))
        per_dim = bounded_log_prob(dist, actions, low, high)
        binary = self.binary_dims
        if binary:
            zero = self.to_policy_units(torch.zeros(actions.shape[-1], dtype=actions.dtype, device=actions.device))
            loc, scale = dist.loc[..., binary], dist.scale[..., binary]  # type: ignore[attr-defined]
            sign = torch.where(actions[..., binary] > zero[binary], 1.0, -1.0)
            per_dim = per_dim.clone()
            per_dim[..., binary] = _standard_log_cdf(dist, sign * (loc - zero[binary]) / scale)
        return per_dim.sum(dim=-1)

    @property
    def binary_dims(self) -> list[int]:
        """Action dimensions the arm reads only by their sign (none unless the family's config names some)."""
        config = getattr(self, "config", None)
        return list(getattr(config, "binary_dims", []) or [])

    def sent(self, actions: np.ndarray) -> np.ndarray:
        """What the arm receives for sampled actions when nothing but the policy's own bounds limits them."""
        return np.clip(actions, self.action_low, self.action_high)

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy's architecture (JSON-serializable)."""

    @property
    def device(self) -> torch.device:
        """Where the policy's weights are: its inputs move there to be scored (results come back to the CPU)."""
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def place(self, device: str, key: str) -> None:
        """Move the policy to `device` (cpu, cuda, cuda:N); a CheckpointError naming the setting `key` when this
        machine has no such device."""
        try:
            self.to(torch.device(device))
        except (RuntimeError, AssertionError) as exc:  # a bad name, or a CUDA device this machine lacks
            raise CheckpointError(
                f"{key}={device!r} cannot hold the policy here ({exc}): set it to cpu, or run where that device is"
            ) from exc

    @torch.no_grad()
    def act(self, observations: Sequence[Observation], deterministic: bool = False) -> list[ActionChunk]:
        """Plan one chunk per observation (a batch of one on a robot, of N in simulation)."""
        was_training = self.training
        self.eval()
        device = self.device
        batch = {name: value.to(device) for name, value in self.preprocess(observations).items()}
        actions, log_probs, extras = self.sample_chunks(batch, deterministic)
        actions = self.to_robot_units(actions)  # the rest of the system speaks robot units
        self.train(was_training)
        actions_np, log_probs_np = actions.cpu().numpy(), log_probs.cpu().numpy()
        extras_np = {name: value.cpu().numpy() for name, value in extras.items()}
        return [
            ActionChunk(actions_np[i], log_probs_np[i], self.version, {k: v[i] for k, v in extras_np.items()})
            for i in range(len(observations))
        ]

    def sample_chunks(
        self, batch: Batch, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """`sample`, and the extras re-scoring will need (B, ...) by name: none, unless a family needs them."""
        actions, log_probs = self.sample(batch, deterministic)
        return actions, log_probs, {}

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
        """Load a checkpoint's tensors (`checkpoint_state`); a clear error naming `source` when they do not fit,
        raised before any weight changes (every name, shape and dtype is checked first)."""
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
            if state[key].dtype != tensor.dtype:  # load_state_dict would cast it silently
                raise CheckpointError(f"{source}: '{key}' is {state[key].dtype}, the policy expects {tensor.dtype}")
        self.load_state_dict(state, strict=False)  # exactly the checkpoint's keys, shapes and dtypes, checked above


class Normalizer(nn.Module):
    """Per-dimension affine maps between robot units and the policy's units, fitted on demonstrations.

    mode "mean_std" maps each dimension's mean to 0 and its standard deviation to 1; "quantile" maps its 1st
    and 99th percentiles to -1 and 1 (robust to a few wild demonstration steps). A constant dimension keeps
    scale 1. The statistics are buffers, so they travel in the checkpoint; until `fit` they are the identity.
    """

    MIN_SCALE = 1e-3  # a dimension that barely moves is not blown up to unit spread

    def __init__(self, mode: str, state_dim: int, action_dim: int):
        super().__init__()
        if mode not in ("mean_std", "quantile"):
            raise ValueError(f"normalization must be 'mean_std' or 'quantile', got {mode!r}")
        self.mode = mode
        for name, dim in (("state", state_dim), ("action", action_dim)):
            self.register_buffer(f"{name}_shift", torch.zeros(dim))
            self.register_buffer(f"{name}_scale", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Statistics from demonstration states (N, S) and actions (N, A), in robot units."""
        for name, values in (("state", states), ("action", actions)):
            values = np.asarray(values, np.float64)
            if values.ndim != 2 or len(values) < 2 or not np.all(np.isfinite(values)):
                raise ValueError(f"normalization needs at least two finite {name} rows, got {values.shape}")
            if self.mode == "mean_std":
                shift, scale = values.mean(0), values.std(0)
            else:
                low, high = np.percentile(values, [1.0, 99.0], axis=0)
                shift, scale = (high + low) / 2, (high - low) / 2
            scale = np.where(scale < self.MIN_SCALE, 1.0, scale)
            getattr(self, f"{name}_shift").copy_(torch.from_numpy(shift))
            getattr(self, f"{name}_scale").copy_(torch.from_numpy(scale))
        self.fitted.fill_(True)

    def state(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.state_shift.to(states.device)) / self.state_scale.to(states.device)

    def to_policy(self, actions: torch.Tensor) -> torch.Tensor:
        """Robot-unit actions (..., A) in the policy's units."""
        return (actions - self.action_shift.to(actions.device)) / self.action_scale.to(actions.device)

    def to_robot(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.action_scale.to(actions.device) + self.action_shift.to(actions.device)


class ConfiguredPolicy(Policy):
    """A family built from a `PolicyConfig` for given cameras, state and action sizes (every family here)."""

    def __init__(
        self,
        config: PolicyConfig,
        image_shape: tuple[int, int],
        state_dim: int,
        action_dim: int,
        cameras: Sequence[str] = (),
        action_bounds: tuple[float, float] = (-1.0, 1.0),
    ):
        """image_shape: (height, width) of every RGB camera; state_dim, action_dim >= 1;
        cameras: the camera names, in the order the policy reads them (empty: one camera,
        whatever its name); action_bounds: (low, high), finite, low < high: the env's action
        range, every dimension (a sampled action beyond it is sent as the bound)."""
        super().__init__()
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"state_dim and action_dim must be >= 1, got {state_dim}, {action_dim}")
        low, high = (float(b) for b in action_bounds)
        if not (np.isfinite([low, high]).all() and low < high):
            raise ValueError(f"action_bounds must be finite with low < high, got {action_bounds}")
        self.action_low, self.action_high = low, high
        self.config = config
        self.image_shape = tuple(image_shape)
        self.cameras = tuple(cameras)
        self.state_dim = state_dim
        self.action_dim = action_dim
        floor = config.min_std if isinstance(config.min_std, list) else [config.min_std] * action_dim
        if len(floor) != action_dim:
            raise ValueError(f"policy.min_std lists {len(floor)} floors for {action_dim} action dimensions")
        self.register_buffer("min_std", torch.tensor(floor, dtype=torch.float32), persistent=False)
        self.normalizer = (
            None if config.normalization == "none" else Normalizer(config.normalization, state_dim, action_dim)
        )
        self.build()

    @property
    def needs_statistics(self) -> bool:
        """The policy normalizes and has not been fitted yet (`fit_statistics` before its first training)."""
        return self.normalizer is not None and not bool(self.normalizer.fitted)

    def fit_statistics(self, states: np.ndarray, actions: np.ndarray) -> None:
        """Fit the normalization on demonstration states (N, S) and actions (N, A), robot units."""
        if self.normalizer is None:
            raise ValueError("this policy does not normalize (policy.normalization is 'none')")
        self.normalizer.fit(states, actions)

    def to_policy_units(self, actions: torch.Tensor) -> torch.Tensor:
        return actions if self.normalizer is None else self.normalizer.to_policy(actions)

    def to_robot_units(self, actions: torch.Tensor) -> torch.Tensor:
        return actions if self.normalizer is None else self.normalizer.to_robot(actions)

    def bounded_scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Scales (..., A) in [min_std, max_std] per action dimension from the head's raw output."""
        lo = self.min_std.to(device=raw.device, dtype=raw.dtype)
        return lo + (self.config.max_std - lo) * torch.sigmoid(raw)

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
            "action_bounds": [self.action_low, self.action_high],
        }

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> ConfiguredPolicy:
        return cls(
            PolicyConfig.model_validate(config["policy"]),
            tuple(config["image_shape"]),
            config["state_dim"],
            config["action_dim"],
            config.get("cameras", ()),  # checkpoints from before multi-camera support: one camera
            tuple(config.get("action_bounds", (-1.0, 1.0))),  # checkpoints from before bounds: the default range
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
        state = torch.from_numpy(np.stack(states).astype(np.float32))
        return torch.from_numpy(np.stack(images)), state if self.normalizer is None else self.normalizer.state(state)


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
