"""Typed configuration: one source of truth for YAML files, the command line and ROS parameters.

Each config is a pydantic model whose field descriptions document the knob (one line each,
with units and valid range); the same models are loaded from `configs/*.yaml`, overridden
from the command line with dotted `key.sub=value` pairs, and (later) declared as ROS 2
parameters. Unknown keys and bad values raise `ConfigError`, which names the key, the file
it came from and what is expected.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ript_robot.config_base import ConfigError as ConfigError
from ript_robot.config_base import ConfigModel as ConfigModel
from ript_robot.config_policy import FlowConfig as FlowConfig
from ript_robot.config_policy import OftConfig as OftConfig
from ript_robot.config_policy import OpenVlaOftConfig as OpenVlaOftConfig
from ript_robot.config_policy import PolicyConfig as PolicyConfig
from ript_robot.config_policy import QuestConfig as QuestConfig


class TaskConfig(ConfigModel):
    """The built-in pick task (see `ript_robot.envs.pick`)."""

    image_size: int = Field(64, ge=16, le=256, description="camera image side in pixels")
    max_steps: int = Field(50, ge=1, le=10_000, description="step limit of one episode")
    target_scene: str = Field("workcell", description="scene the policy is post-trained in")
    pretrain_scenes: list[str] = Field(
        default_factory=lambda: ["lab_a", "lab_b", "lab_c"],
        description="scenes with plentiful demonstrations, used for pretraining",
    )
    train_contexts_per_task: int = Field(8, ge=1, description="seeded layouts per task in the RIPT pool")
    heldout_contexts_per_task: int = Field(25, ge=1, description="layouts per task kept for evaluation only")
    scripted_operator: bool = Field(
        False, description="a scripted operator rescues training rollouts about to grasp beside the block"
    )


class LiberoEnvConfig(ConfigModel):
    """A LIBERO simulator (see `sim_bridge.libero_env`): suite, cameras, step limit."""

    suite: Literal["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"] = Field(
        "libero_spatial", description="LIBERO task suite"
    )
    image_size: int = Field(128, ge=32, le=512, description="camera image side in pixels")
    cameras: list[str] = Field(
        default_factory=lambda: ["agentview", "wrist"], description="cameras the policy sees: agentview, wrist"
    )
    max_steps: int = Field(0, ge=0, description="episode step limit (0: the suite's usual one)")
    shadows: bool = Field(False, description="render shadows and reflections (twice as slow; LIBERO's data has them)")

    @model_validator(mode="after")
    def _known_cameras(self) -> LiberoEnvConfig:
        unknown = [c for c in self.cameras if c not in ("agentview", "wrist")]
        if unknown or not self.cameras:
            raise ValueError(f"cameras must be some of agentview, wrist; got {self.cameras}")
        return self


class LiberoConfig(LiberoEnvConfig):
    """LIBERO tasks for `ript sim-train`; contexts are the benchmark's fixed initial states."""

    tasks: list[int] = Field(default_factory=lambda: [0], description="task ids of the suite to train on")
    train_inits: int = Field(40, ge=1, le=50, description="initial states 0..N-1 of each task are RIPT contexts")
    heldout_inits: int = Field(5, ge=0, le=49, description="the next N initial states are for evaluation only")
    demos_per_task: int = Field(5, ge=0, le=50, description="scripted-expert demonstrations per task (last inits)")
    demo_dir: Path | None = Field(None, description="folder of LIBERO's <task>_demo.hdf5 files, used instead")
    workers: int = Field(2, ge=1, description="simulator worker processes stepped in lock step")

    @model_validator(mode="after")
    def _disjoint_inits(self) -> LiberoConfig:
        used = self.train_inits + self.heldout_inits + (0 if self.demo_dir else self.demos_per_task)
        if used > 50:
            raise ValueError(
                f"train_inits + heldout_inits + demos_per_task = {used}, but each LIBERO task has 50 initial states"
            )
        return self


class SafetyConfig(ConfigModel):
    """Limits the safety filter enforces on every command (on by default)."""

    enabled: bool = Field(True, description="apply the limits (turn off only in simulation)")
    action_low: list[float] = Field(
        default_factory=lambda: [-1.0], description="lower bound per action dimension (one value: every dimension)"
    )
    action_high: list[float] = Field(
        default_factory=lambda: [1.0], description="upper bound per action dimension (one value: every dimension)"
    )
    workspace: str = Field("", description="workspace calibration YAML (box, keep-out, per-step limits); '' for none")

    @field_validator("action_low", "action_high", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, (int, float)) else value

    @model_validator(mode="after")
    def _check_bounds(self) -> SafetyConfig:
        low, high = self.action_low, self.action_high
        if not low or not high or (len(low) != len(high) and 1 not in (len(low), len(high))):
            raise ValueError(
                f"action_low ({low}) and action_high ({high}) need one value each, or one per action dimension"
            )
        if not np.all(np.isfinite(low + high)) or not np.all(np.asarray(low) < np.asarray(high)):
            raise ValueError(f"action_low ({low}) must be finite and below action_high ({high}) on every dimension")
        return self

    def bounds(self, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) as float32 arrays of length `action_dim`; ValueError when the lists fit another size."""
        out = []
        for name, values in (("action_low", self.action_low), ("action_high", self.action_high)):
            if len(values) not in (1, action_dim):
                raise ValueError(
                    f"runtime.safety.{name} has {len(values)} values for a {action_dim}-dim action: "
                    f"give one value, or {action_dim}"
                )
            out.append(np.broadcast_to(np.asarray(values, np.float32), (action_dim,)).copy())
        return out[0], out[1]


class RuntimeConfig(ConfigModel):
    """The control loop shared by the robot and the simulator."""

    execute_steps: int = Field(8, ge=1, description="steps of each chunk executed open-loop before re-planning")
    frame_every: int = Field(
        1, ge=0, description="keep camera frames of every N-th step in the episode log (0: only those planned from)"
    )
    safety: SafetyConfig = Field(default_factory=SafetyConfig)


class SFTConfig(ConfigModel):
    """Behaviour cloning (maximum likelihood on demonstration chunks, scale head included)."""

    steps: int = Field(3000, ge=0, description="gradient steps")
    batch_size: int = Field(64, ge=1, description="chunks per minibatch")
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW weight decay")


class RIPTConfig(ConfigModel):
    """RIPT: K rollouts per context, leave-one-out advantage, dynamic sampling, PPO update."""

    iterations: int = Field(15, ge=0, description="RIPT iterations (collect, then update)")
    rollouts_per_context: int = Field(8, ge=2, description="K: rollouts per context in a group")
    groups_per_iteration: int = Field(48, ge=1, description="groups with mixed rewards wanted per update")
    dynamic_sampling: bool = Field(True, description="drop groups whose K rewards are all equal")
    max_sampling_rounds: int = Field(
        4, ge=1, description="sampling budget: at most this many times groups_per_iteration groups per iteration"
    )
    episode_budget: int = Field(
        0, ge=0, description="labeled episodes the whole run may spend; training stops once spent (0: no limit)"
    )
    context_selection: Literal["uniform", "informative"] = Field(
        "uniform", description="uniform passes over the contexts, or favour those whose next group is likely mixed"
    )
    ppo_epochs: int = Field(4, ge=1, description="passes over the batch per iteration")
    reuse_updates: int = Field(
        1, ge=1, description="updates each accepted group takes part in (>1: replayed, ratio to the stored log-probs)"
    )
    minibatch_size: int = Field(64, ge=1, description="chunks per PPO minibatch")
    loss_weighting: Literal["action", "episode"] = Field(
        "action", description="the loss's mean: every credited action alike, or every episode alike"
    )
    imitation_coef: float = Field(
        1.0, ge=0.0, description="weight of the behaviour-cloning term on imitated actions in the loss (0: none)"
    )
    imitate_successes: bool = Field(
        False, description="successful rollouts' executed actions are imitated (self-imitation; needs imitation_coef)"
    )
    lr: float = Field(5e-4, gt=0.0, description="Adam learning rate of the PPO update")
    clip_low: float = Field(0.2, gt=0.0, lt=1.0, description="ratio may fall to 1 - clip_low")
    clip_high: float = Field(0.28, gt=0.0, description="ratio may rise to 1 + clip_high")
    max_grad_norm: float = Field(1.0, gt=0.0, description="gradient clipping threshold (L2 norm)")
    target_kl: float | None = Field(
        None, gt=0.0, description="end the update early once a minibatch's approx_kl exceeds this (None: never)"
    )

    @model_validator(mode="after")
    def _budget_holds_a_group(self) -> RIPTConfig:
        if 0 < self.episode_budget < self.rollouts_per_context:
            raise ValueError(
                f"ript.episode_budget ({self.episode_budget}) is smaller than one group of ript.rollouts_per_context "
                f"({self.rollouts_per_context}) episodes: give at least {self.rollouts_per_context}, or 0 for no limit"
            )
        return self


class EvalConfig(ConfigModel):
    """How success rates are measured."""

    rollouts_per_context: int = Field(1, ge=1, description="rollouts per context when evaluating")
    deterministic: bool = Field(True, description="use the mean action instead of sampling")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="confidence level of the Wilson interval")


class StoreConfig(ConfigModel):
    """The episode store shared by actors and the trainer (see `ript_robot.data`)."""

    uri: str = Field("runs/store", description="local directory or s3://bucket/prefix (S3 settings from AWS_* env)")
    chunk_frames: int = Field(16, ge=1, description="time steps per stored chunk of camera images")
    flush_frames: int = Field(
        64, ge=1, description="steps buffered per block the writer streams (a multiple of chunk_frames)"
    )
    compressor: Literal["lz4", "zstd", "blosclz"] = Field("lz4", description="blosc codec of the episode arrays")
    clevel: int = Field(5, ge=1, le=9, description="compression level")

    @model_validator(mode="after")
    def _flush_in_whole_chunks(self) -> StoreConfig:
        if self.flush_frames % self.chunk_frames:
            raise ValueError(
                f"flush_frames ({self.flush_frames}) must be a multiple of chunk_frames ({self.chunk_frames})"
            )
        return self


class TrainerConfig(ConfigModel):
    """The off-board trainer service (`ript train`)."""

    max_staleness: int = Field(
        0, ge=0, description="groups scheduled for versions >= current - max_staleness still count (>= 1 with people)"
    )
    poll_s: float = Field(0.5, gt=0.0, description="seconds between looks at the store while waiting for groups")
    stall_timeout_s: float = Field(
        300.0, gt=0.0, description="with no new rollout or label this long, re-schedule claimed, uncommitted slots"
    )
    output_dir: Path = Field(Path("runs/train"), description="metrics.jsonl and tensorboard/ of the trainer")
    fsdp: bool = Field(
        False, description="under torchrun, shard weights, gradients and Adam state across ranks (FSDP2)"
    )
    device: str = Field(
        "",
        description="where the updates run (the store trainer's; the quickstart's SFT and RIPT too): cpu, cuda, "
        "cuda:N; '' where the policy is built (policy.oft.device)",
    )
    max_fruitless_iterations: int = Field(
        3, ge=0, description="stop when this many sampling budgets in a row give no group to learn from (0: never)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"|cpu|cuda(:\d+)?", value):
            raise ValueError(f"trainer.device must be '', cpu, cuda or cuda:N, got {value!r}")
        return value


class ActorConfig(ConfigModel):
    """A worker that claims scheduled rollouts and commits them to the store (`ript actor`)."""

    robot_id: str = Field("sim-0", description="name recorded with every episode this actor writes")
    max_envs: int = Field(64, ge=1, description="slots claimed (and simulators stepped in lock step) at a time")
    poll_s: float = Field(0.5, gt=0.0, description="seconds between looks at the schedule when there is no work")


class DetectorConfig(ConfigModel):
    """The vision success detector (`ript detector train`, the label app, the detector node)."""

    checkpoint: str = Field("", description="trained detector folder (model.safetensors + detector.json); '' for none")
    mode: Literal["off", "suggest", "auto"] = Field(
        "suggest", description="suggest: show its guess, the operator decides; auto: label when confident; off"
    )
    camera: str = Field("", description="camera it looks through ('' for the first by name)")
    image_size: int = Field(64, ge=16, le=256, description="side, pixels, its input frames are resized to")
    last_frames: int = Field(1, ge=1, description="frames at the end of each episode used as training examples")
    steps: int = Field(2000, ge=1, description="training steps")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate at the start, cosine-decayed to 0 over the steps")
    batch_size: int = Field(64, ge=1, description="frames per training batch")
    validation_fraction: float = Field(
        0.25, gt=0.0, lt=1.0, description="share of labeled episodes held out to calibrate the threshold"
    )
    rotate_augment: bool = Field(
        False, description="train on quarter turns of each frame too (when success looks the same turned, as top-down)"
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    auto_max_error: float = Field(
        0.01, ge=0.0, lt=0.5, description="auto mode labels only where its validation error is at most this"
    )


class LabelAppConfig(ConfigModel):
    """The operator's tablet app (`ript label-app`, and the workstation launch file's label_app node)."""

    host: str = Field(
        "127.0.0.1", description="bind address: 0.0.0.0 (or the workstation's LAN address) lets a tablet reach it"
    )
    port: int = Field(8765, ge=1, le=65535, description="TCP port")
    robot: Literal["none", "sim", "ros"] = Field(
        "none", description="live view and start/stop through: the ROS policy node, the built-in sim, or nothing"
    )
    undo_window_s: float = Field(10.0, gt=0.0, description="seconds after a label during which its labeler may undo")
    pairing_code_ttl_s: float = Field(600.0, gt=0.0, description="seconds a pairing code stays valid")
    pairing_attempts_per_client_per_min: int = Field(
        5, ge=1, description="pairing attempts a minute from one address (more: 429 with Retry-After)"
    )
    pairing_attempts_per_min: int = Field(10, ge=1, description="pairing attempts a minute from all addresses together")
    queue_length: int = Field(20, ge=1, description="unlabeled episodes listed, newest first")
    rollouts_per_context: int = Field(8, ge=1, description="K shown per context when the store has no schedule")
    poll_ms: int = Field(500, ge=100, description="how often the page refreshes its state, milliseconds")


class QuickstartConfig(ConfigModel):
    """The main job: pretrain, SFT from one demonstration per task, then RIPT."""

    seed: int = Field(0, description="seed of everything random")
    output_dir: Path = Field(Path("runs/quickstart"), description="where checkpoints, metrics and plots go")
    pretrain_demos_per_task: int = Field(60, ge=0, description="expert demos per task per pretraining scene")
    target_demos_per_task: int = Field(1, ge=1, description="expert demos per task in the target scene")
    torch_threads: int = Field(0, ge=0, description="torch CPU threads (0: leave torch's default)")
    init_checkpoint: Path | None = Field(None, description="start RIPT from this checkpoint, skipping pretrain and SFT")
    task: TaskConfig = Field(default_factory=TaskConfig)
    libero: LiberoConfig = Field(default_factory=LiberoConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    pretrain: SFTConfig = Field(default_factory=SFTConfig)
    sft: SFTConfig = Field(default_factory=lambda: SFTConfig(steps=400, lr=3e-4))
    ript: RIPTConfig = Field(default_factory=RIPTConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    actor: ActorConfig = Field(default_factory=ActorConfig)
    label_app: LabelAppConfig = Field(default_factory=LabelAppConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)

    @model_validator(mode="after")
    def _staleness_within_the_run(self) -> QuickstartConfig:
        if self.ript.iterations and self.trainer.max_staleness >= self.ript.iterations:
            raise ValueError(
                f"trainer.max_staleness ({self.trainer.max_staleness}) reaches back past the run's "
                f"{self.ript.iterations} ript.iterations: the store holds no schedule that old; "
                f"use 0..{self.ript.iterations - 1}"
            )
        return self


C = TypeVar("C", bound=ConfigModel)


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (`3` -> int, `true` -> bool, `[1,2]` -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def _known_keys(cls: type[ConfigModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at `loc`, for 'did you mean' hints."""
    model: Any = cls
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def format_errors(cls: type[ConfigModel], err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            known = _known_keys(cls, loc)
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            lines.append(f"  unknown key '{key}'{did_you_mean}; valid keys here: {', '.join(known)}")
        else:
            lines.append(f"  '{key}': {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build `cls` from its defaults, then a YAML file, then `key.sub=value` overrides.

    Raises ConfigError naming the file (or override) and the offending key.
    """
    tree: dict[str, Any] = {}
    sources = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(loaded).__name__}")
        tree = loaded or {}
        sources.append(str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, _, value = item.partition("=")
        _set_dotted(tree, key.strip(), _parse_scalar(value))
        sources.append(f"override {item}")
    try:
        return cls.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_errors(cls, exc, ", ".join(sources) or "defaults")) from None


def dump_config(config: ConfigModel) -> str:
    """YAML text of a config, readable back with `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
