"""The policy families' typed configs, re-exported by `ript_robot.config` (one source of truth with the rest)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ript_robot.config_base import ConfigModel


class FlowConfig(ConfigModel):
    """The flow family: an action expert that denoises a chunk from Gaussian noise in `steps` Euler steps."""

    steps: int = Field(4, ge=1, le=64, description="denoising steps N of the chain (each a Gaussian with RIPT)")
    time_dim: int = Field(16, ge=2, description="width of the sinusoidal embedding of the flow time t")


class QuestConfig(ConfigModel):
    """The QueST-style family: an FSQ skill autoencoder over action chunks and an autoregressive skill prior."""

    fsq_levels: list[int] = Field(
        default_factory=lambda: [8, 6, 5], description="FSQ levels per latent dimension; the codebook is their product"
    )
    actions_per_token: int = Field(2, ge=1, description="actions one skill token decodes to; divides chunk_size")
    prior_dim: int = Field(64, ge=8, description="width of the prior's transformer")
    prior_layers: int = Field(2, ge=1, le=12, description="causal transformer layers of the prior")
    prior_heads: int = Field(4, ge=1, description="attention heads of the prior; divides prior_dim")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature of the prior's softmax")
    top_k: int = Field(0, ge=0, description="sample among the k likeliest tokens (0: the whole codebook)")

    @model_validator(mode="after")
    def _check(self) -> QuestConfig:
        if len(self.fsq_levels) < 1 or any(not 2 <= level <= 64 for level in self.fsq_levels):
            raise ValueError(f"fsq_levels must be one or more integers in [2, 64], got {self.fsq_levels}")
        if self.prior_dim % self.prior_heads:
            raise ValueError(f"prior_heads ({self.prior_heads}) must divide prior_dim ({self.prior_dim})")
        return self


class OftConfig(ConfigModel):
    """The OpenVLA-OFT-style family: a transformers VLM with LoRA and a parallel-decoding action head."""

    backbone: str = Field(
        "", description="the VLM: a hub id or a local folder that transformers' AutoModel loads (LLaVA-style)"
    )
    revision: str = Field(
        "", description="the backbone's hub revision; a commit hash pins the weights the adapters belong to"
    )
    device: str = Field(
        "cpu", description="where the policy runs: cpu, cuda, cuda:N (batches move there; results come back)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the backbone's frozen weights (bfloat16 for 7B on a GPU); adapters: float32"
    )
    prompt: str = Field(
        "In: What action should the robot take to {instruction}?\nOut:",
        description="text the instruction is put in ({instruction}); OpenVLA's prompt by default",
    )
    lora_rank: int = Field(16, ge=1, description="rank of the LoRA adapters")
    lora_alpha: float = Field(32.0, gt=0.0, description="LoRA scaling numerator (the update is scaled by alpha/rank)")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="names of the language model's linear layers that get adapters (the vision tower never does)",
    )

    @model_validator(mode="after")
    def _check(self) -> OftConfig:
        if "{instruction}" not in self.prompt:
            raise ValueError(f"oft.prompt must contain '{{instruction}}', got {self.prompt!r}")
        if not self.lora_targets:
            raise ValueError("oft.lora_targets must name at least one layer, e.g. ['q_proj', 'v_proj']")
        return self


class OpenVlaOftConfig(ConfigModel):
    """A released OpenVLA-OFT checkpoint (policy.oft.backbone is its folder): what its files do not record."""

    unnorm_key: str = Field(
        "", description="dataset in dataset_statistics.json whose statistics un-normalize actions ('': the only one)"
    )
    normalization_type: Literal["bounds_q99", "bounds"] = Field(
        "bounds_q99", description="how OFT normalized actions and proprio: q01..q99 (LIBERO, Bridge) or min..max"
    )
    cameras: list[str] = Field(
        default_factory=lambda: ["agentview", "wrist"],
        description="the cameras the checkpoint was fine-tuned on, in its input order (third-person first); "
        "their count is OFT's num_images_in_input",
    )
    center_crop: bool = Field(True, description="crop the central 90% of each image's area and resize it back")
    libero_gripper: bool = Field(
        False,
        description="the last action is OFT's LIBERO gripper (1 open, 0 closed): send 1 - 2g, where -1 opens",
    )

    @model_validator(mode="after")
    def _check(self) -> OpenVlaOftConfig:
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"openvla_oft.cameras must name one or more distinct cameras, got {self.cameras}")
        return self


class PolicyConfig(ConfigModel):
    """A policy: its family, its action chunk, and the family's own settings."""

    family: Literal["chunked", "quest", "oft", "flow", "flow_vlm", "openvla_oft"] = Field(
        "chunked",
        description="policy family: chunked (Gaussian chunk head), quest (skill tokens), oft (transformers VLM + "
        "LoRA), flow (flow-matching action expert with Flow-Noise log-probabilities), flow_vlm (the same on the "
        "oft family's VLM: policy.oft settings), openvla_oft (a released OpenVLA-OFT checkpoint folder in "
        "policy.oft.backbone, LoRA as policy.oft)",
    )
    chunk_size: int = Field(8, ge=1, le=128, description="actions predicted per chunk (H)")
    hidden_dim: int = Field(256, ge=8, description="width of the MLP trunk (oft: of the action head)")
    channels: int = Field(16, ge=4, description="conv channels of the light families' image encoder")
    keypoints: int = Field(16, ge=1, description="spatial-softmax keypoints of the light families' image encoder")
    distribution: Literal["gaussian", "laplace"] = Field(
        "gaussian", description="action distribution of the chunked family (oft: always Laplace)"
    )
    min_std: float | list[float] = Field(
        0.25,
        description="lower bound of the learned scale (action units; one per action dimension, or one for all); "
        "RIPT explores with it",
    )
    max_std: float = Field(1.0, gt=0.0, description="upper bound of the learned scale (action units)")
    binary_dims: list[int] = Field(
        default_factory=list,
        description="action dimensions the arm reads only by sign (a gripper closing above 0): RIPT scores P(sign)",
    )
    normalization: Literal["none", "mean_std", "quantile"] = Field(
        "none",
        description="per-dimension state and action statistics from the demonstrations, applied inside the policy "
        "(min_std and max_std are then in normalized units)",
    )

    quest: QuestConfig = Field(default_factory=QuestConfig, description="the quest family's skill tokens and prior")
    flow: FlowConfig = Field(default_factory=FlowConfig, description="the flow family's denoising chain")
    oft: OftConfig = Field(default_factory=OftConfig, description="the oft family's backbone and LoRA adapters")
    openvla_oft: OpenVlaOftConfig = Field(
        default_factory=OpenVlaOftConfig, description="the openvla_oft family's settings its checkpoint lacks"
    )

    @model_validator(mode="after")
    def _check_scale(self) -> PolicyConfig:
        floors = self.min_std if isinstance(self.min_std, list) else [self.min_std]
        if not floors or not all(0.0 < f < self.max_std for f in floors):
            raise ValueError(f"min_std ({self.min_std}) must be above 0 and below max_std ({self.max_std})")
        if self.family in ("oft", "flow_vlm", "openvla_oft") and not self.oft.backbone:
            raise ValueError(
                f"policy.family={self.family} needs policy.oft.backbone: a transformers VLM's hub id or local folder "
                "(openvla_oft: the released checkpoint's folder)"
            )
        if self.family == "openvla_oft" and self.normalization != "none":
            raise ValueError(
                "policy.normalization must be 'none' with openvla_oft: it normalizes with its checkpoint's "
                "dataset_statistics.json (policy.openvla_oft.unnorm_key)"
            )
        if self.family == "quest" and self.chunk_size % self.quest.actions_per_token:
            raise ValueError(
                f"quest.actions_per_token ({self.quest.actions_per_token}) must divide chunk_size ({self.chunk_size})"
            )
        return self
