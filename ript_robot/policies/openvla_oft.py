"""Released OpenVLA-OFT checkpoints as a RIPT policy: the model as published, a Laplace scale on top.

RIPT's headline VLA result post-trains the released OpenVLA-OFT LIBERO checkpoints, adding a scale
head to OFT's L1 action head so every action has a log-probability. This family loads such a
folder (`policy.oft.backbone`; files and key map in `openvla_files`) and computes what the reference
(`prismatic`'s `predict_action` with its L1 head, on the forked Llama) computes:

- each camera image, optionally center-cropped to 90% of its area (the reference's TensorFlow crop:
  bilinear, corner-aligned, back to 8 bits), normalized twice: DINOv2's statistics and SigLIP's;
  both towers' second-to-last block patches, side by side, then the projector (fc1-GELU-fc2-GELU-fc3);
- one sequence: [BOS] patches of every camera, the proprio token (OFT's projector of the normalized
  state), the prompt after BOS with Llama's empty token ('▁', 29871) last, H x A zero embeddings,
  then the stop token; attention is fully bidirectional over it (the fork's Llama), pads only masked;
- the hidden states at the H x A positions from the last prompt token on (the reference's slice),
  regrouped to (H, A x width), give OFT's MLP-ResNet head the chunk's normalized means, and RIPT's
  scale head (LayerNorm + Linear on the same features) the Laplace scales;
- actions are un-normalized with `dataset_statistics.json` (bounds_q99: q01..q99 -> -1..1, masked
  dimensions raw); the proprio is normalized the same way and clipped to [-1, 1].

SFT here fits only the scale head, by the Laplace likelihood of demonstrations around the detached
mean (RIPT's recipe for a released L1 checkpoint: the means already are the policy). RIPT then trains
LoRA adapters on Llama (policy.oft.lora_*), the action head, the proprio projector and the scale head;
our checkpoints hold those and name the base folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Laplace

from ript_robot.policies import openvla_files as files
from ript_robot.policies.base import Batch, CheckpointError, masked_mean
from ript_robot.policies.oft import OftPolicy, transformers_module
from ript_robot.types import Observation

DINO_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet, the DINOv2 tower's
SIGLIP_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CROP_AREA = 0.9  # OFT's center crop for checkpoints trained with random crops


class ResidualBlock(nn.Module):
    """Pre-LayerNorm feed-forward block with a skip: x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, width: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """OFT's action MLP: LayerNorm, Linear, ReLU, two residual blocks, LayerNorm, Linear (its key names)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, blocks: int = 2):
        super().__init__()
        self.layer_norm1, self.fc1 = nn.LayerNorm(input_dim), nn.Linear(input_dim, hidden_dim)
        self.mlp_resnet_blocks = nn.ModuleList(ResidualBlock(hidden_dim) for _ in range(blocks))
        self.layer_norm2, self.fc2 = nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class ActionHead(nn.Module):
    """OFT's L1 regression head: the chunk's (H, A x width) features -> normalized action means (H, A)."""

    def __init__(self, width: int, action_dim: int):
        super().__init__()
        self.model = MLPResNet(width * action_dim, width, action_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features)


class TwoLayer(nn.Module):
    """fc1, GELU, fc2: OFT's proprio projector (state -> width)."""

    def __init__(self, inputs: int, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(inputs, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class FusedProjector(nn.Module):
    """Prismatic's fused-backbone projector: fc1 (x4), GELU, fc2 to the LLM width, GELU, fc3."""

    def __init__(self, vision_width: int, width: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, 4 * vision_width)
        self.fc2, self.fc3 = nn.Linear(4 * vision_width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


class OpenVlaBackbone(nn.Module):
    """DINOv2-with-registers and SigLIP (transformers), the projector and Llama, sized from the checkpoint.

    Each tower keeps depth - 1 blocks: OpenVLA's features are the second-to-last block's output."""

    def __init__(self, dino: dict[str, int], siglip: dict[str, int], text_config: dict[str, Any], image_size: int):
        super().__init__()
        t = transformers_module()
        self.registers = dino["registers"]
        common = {"image_size": image_size, "layer_norm_eps": 1e-6, "hidden_act": "gelu"}
        self.dino = t.Dinov2WithRegistersModel(
            t.Dinov2WithRegistersConfig(
                hidden_size=dino["width"],
                num_hidden_layers=dino["depth"] - 1,
                num_attention_heads=dino["heads"],
                mlp_ratio=dino["mlp"] // dino["width"],
                patch_size=dino["patch"],
                num_register_tokens=dino["registers"],
                **common,
            )
        )
        self.siglip = t.SiglipVisionModel(
            t.SiglipVisionConfig(
                hidden_size=siglip["width"],
                num_hidden_layers=siglip["depth"] - 1,
                intermediate_size=siglip["mlp"],
                num_attention_heads=siglip["heads"],
                patch_size=siglip["patch"],
                vision_use_head=False,
                **common,
            )
        )
        config = {k: v for k, v in text_config.items() if k not in ("architectures", "torch_dtype", "dtype")}
        self.language_model = t.LlamaModel(t.LlamaConfig(**config))
        self.projector = FusedProjector(dino["width"] + siglip["width"], self.language_model.config.hidden_size)

    def materialize(self) -> None:
        """Buffers built on the meta device (position ids, rotary frequencies) made real, on the CPU."""
        model = self.language_model
        model.rotary_emb = type(model.rotary_emb)(config=model.config)
        embeddings = self.siglip.embeddings
        embeddings.position_ids = torch.arange(embeddings.num_positions).expand(1, -1)

    @property
    def dtype(self) -> torch.dtype:
        return self.projector.fc1.weight.dtype


class OpenVlaOftPolicy(OftPolicy):
    """A released OpenVLA-OFT checkpoint with RIPT's Laplace scale head (see the module doc)."""

    family = "openvla_oft"
    sft_stages = ("scale",)
    finetune_stages = ("scale",)

    def build(self) -> None:
        folder = Path(self.config.oft.backbone)
        if not folder.is_dir():
            raise CheckpointError(
                f"policy.oft.backbone={str(folder)!r} is not a folder: openvla_oft loads a released checkpoint "
                "from disk (download it first, e.g. huggingface-cli download <repo> --local-dir <folder>)"
            )
        config = files.read_config(folder)
        self._check_robot(config)
        self._load_vlm(folder, config)
        width = self.backbone.language_model.config.hidden_size
        action, state = ("model.fc2.weight", 0, "action", self.action_dim), ("fc1.weight", 1, "state", self.state_dim)
        self.action_head = self._load_part(folder, "action_head", ActionHead(width, self.action_dim), action)
        self.proprio_projector = self._load_part(folder, "proprio_projector", TwoLayer(self.state_dim, width), state)
        self.scale_head = nn.Sequential(
            nn.LayerNorm(width * self.action_dim), nn.Linear(width * self.action_dim, self.action_dim)
        )
        self._add_adapters(self.backbone.language_model)
        self._set_units(files.dataset_statistics(folder, config, self.config.openvla_oft.unnorm_key))
        self._set_images(folder)
        t = transformers_module()
        self.tokenizer = t.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        self.empty_id = self.tokenizer.convert_tokens_to_ids("▁")
        if self.empty_id in (None, self.tokenizer.unk_token_id) or self.tokenizer.eos_token_id is None:
            raise CheckpointError(f"the tokenizer in {folder} lacks Llama's empty token '▁' or its stop token")
        self._token_cache: dict[str, list[int]] = {}
        self.place(self.config.oft.device, "policy.oft.device")

    def _check_robot(self, config: dict[str, Any]) -> None:
        """Refuse a robot whose images or cameras the checkpoint does not take, naming both values."""
        side = int(config["image_sizes"][0])
        if tuple(self.image_shape) != (side, side):
            raise CheckpointError(
                f"the checkpoint takes {side}x{side} images (config.json image_sizes), the robot's cameras give "
                f"{self.image_shape[0]}x{self.image_shape[1]}: resize the cameras to {side}x{side}"
            )
        wanted = list(self.config.openvla_oft.cameras)
        have = list(self.cameras) if self.cameras else ["(one camera)"]
        if len(wanted) != len(have) or (self.cameras and set(wanted) != set(self.cameras)):
            raise CheckpointError(
                f"the checkpoint takes {len(wanted)} camera(s) {wanted} (policy.openvla_oft.cameras), the robot has "
                f"{len(have)}: {have}"
            )
        if self.cameras:
            self.cameras = tuple(wanted)  # the checkpoint's order: third-person first

    def _load_vlm(self, folder: Path, config: dict[str, Any]) -> None:
        where = files.shards(folder)
        shape = files.shapes(where)
        side = int(config["image_sizes"][0])
        dino, siglip = (files.tower_sizes(shape, tower, side) for tower in files.TOWERS)
        with torch.device("meta"):
            self.backbone = OpenVlaBackbone(dino, siglip, config["text_config"], side)
        expected = {k: v.shape for k, v in self.backbone.state_dict().items()}
        dtype = getattr(torch, self.config.oft.dtype)
        state = files.load_vlm(where, {"dino": dino["depth"], "siglip": siglip["depth"]}, expected, dtype)
        state["dino.embeddings.mask_token"] = torch.zeros(expected["dino.embeddings.mask_token"], dtype=dtype)
        missing = sorted(set(expected) - set(state))
        if missing:
            raise CheckpointError(f"{folder} lacks weights the model needs, e.g. {missing[:3]} ({len(missing)} in all)")
        self.backbone.load_state_dict(state, assign=True)
        self.backbone.materialize()

    def _load_part(self, folder: Path, name: str, module: nn.Module, size: tuple[str, int, str, int]) -> nn.Module:
        """The `<name>--*.pt` part into `module`; size: (key, axis, what, robot's value) checked first by name."""
        path = files.find_part(folder, name)
        state = files.read_part(path)
        key, axis, what, ours = size
        if key in state and state[key].shape[axis] != ours:
            raise CheckpointError(
                f"{path.name}: the checkpoint's {what} has {state[key].shape[axis]} dimensions ('{key}'), "
                f"the robot's {ours}"
            )
        files.check_part(path, state, module)
        module.load_state_dict(state)
        return module

    def _set_units(self, stats: dict[str, Any]) -> None:
        """Affine maps robot units <-> OFT's normalized units, from the dataset's statistics."""
        settings = self.config.openvla_oft
        low_key, high_key = ("q01", "q99") if settings.normalization_type == "bounds_q99" else ("min", "max")
        for name, part, dim in (("action", "action", self.action_dim), ("state", "proprio", self.state_dim)):
            entry = stats[part]
            low, high = (np.asarray(entry[k], np.float64) for k in (low_key, high_key))
            if low.shape != (dim,) or high.shape != (dim,):
                raise CheckpointError(
                    f"dataset statistics: the checkpoint's {part} has {low.size} dimensions, the robot's {name} {dim}"
                )
            mask = np.asarray(entry.get("mask", [True] * dim), bool)
            scale = np.where(mask, (high - low + 1e-8) / 2, 1.0)
            shift = np.where(mask, low + scale, 0.0)
            if name == "action" and settings.libero_gripper:  # robot = 1 - 2 g, g the checkpoint's gripper
                scale[-1], shift[-1] = -2 * scale[-1], 1 - 2 * shift[-1]
            self.register_buffer(f"{name}_scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
            self.register_buffer(f"{name}_shift", torch.tensor(shift, dtype=torch.float32), persistent=False)

    def _set_images(self, folder: Path) -> None:
        """Per-tower image means and stds: preprocessor_config.json's, else DINOv2's and SigLIP's."""
        path = folder / "preprocessor_config.json"
        processor = json.loads(path.read_text()) if path.is_file() else {}
        means = processor.get("means", [DINO_STATS[0], SIGLIP_STATS[0]])
        stds = processor.get("stds", [DINO_STATS[1], SIGLIP_STATS[1]])
        for tower, mean, std in zip(("dino", "siglip"), means, stds, strict=True):
            self.register_buffer(f"{tower}_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"{tower}_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def to_policy_units(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_shift.to(actions.device)) / self.action_scale.to(actions.device)

    def to_robot_units(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.action_scale.to(actions.device) + self.action_shift.to(actions.device)

    def prompt_ids(self, instruction: str) -> list[int]:
        """The prompt's ids with Llama's empty token last, as the reference appends it."""
        ids = super().prompt_ids(instruction)
        return ids if ids[-1] == self.empty_id else [*ids, self.empty_id]

    def preprocess(self, observations: Sequence[Observation]) -> Batch:
        batch = super().preprocess(observations)
        batch["state"] = ((batch["state"] - self.state_shift.cpu()) / self.state_scale.cpu()).clamp(-1.0, 1.0)
        return batch

    def _image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W, 3) uint8 -> (B, N x patches, width): both towers' patches, projected."""
        b, n = image.shape[:2]
        x = image.flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
        if self.config.openvla_oft.center_crop:
            x = center_crop(x)
        dtype = self.backbone.dtype
        dino_in = ((x - self.dino_mean) / self.dino_std).to(dtype)
        siglip_in = ((x - self.siglip_mean) / self.siglip_std).to(dtype)
        dino = self.backbone.dino(pixel_values=dino_in, output_hidden_states=True).hidden_states[-1]
        siglip = self.backbone.siglip(pixel_values=siglip_in, output_hidden_states=True).hidden_states[-1]
        patches = torch.cat([dino[:, 1 + self.backbone.registers :], siglip], dim=-1)
        projected = self.backbone.projector(patches)
        return projected.reshape(b, n * projected.shape[1], projected.shape[-1])

    def hidden(self, batch: Batch) -> torch.Tensor:
        """One bidirectional pass; the chunk's features (B, H, A x width), float32."""
        device, dtype = self.action_scale.device, self.backbone.dtype
        batch = {k: v.to(device) for k, v in batch.items()}
        embed = self.backbone.language_model.get_input_embeddings()
        ids, text = batch["tokens"], batch["token_mask"]
        words = embed(ids)
        b, width, slots = ids.shape[0], words.shape[-1], self.chunk_size * self.action_dim
        patches = self._image_tokens(batch["image"])
        proprio = self.proprio_projector(batch["state"]).to(dtype)[:, None]
        prompt = text.sum(1, keepdim=True) - 1  # prompt tokens after BOS
        pos = torch.arange(ids.shape[1] - 1 + slots + 1, device=device)[None]
        after_bos = words[:, 1:].gather(1, pos.clamp(max=ids.shape[1] - 2)[..., None].expand(b, -1, width))
        stop = embed(torch.tensor([self.tokenizer.eos_token_id], device=device))
        tail = torch.where((pos < prompt)[..., None], after_bos, 0) + torch.where(
            (pos == prompt + slots)[..., None], stop, 0
        )
        embeds = torch.cat([words[:, :1], patches, proprio, tail.to(dtype)], dim=1)
        lead = 1 + patches.shape[1] + 1
        valid = torch.cat([text.new_ones(b, lead), (pos <= prompt + slots).to(text.dtype)], dim=1)
        length = embeds.shape[1]
        mask = torch.zeros(b, 1, length, length, dtype=dtype, device=device)
        mask = mask.masked_fill(~valid.bool()[:, None, None, :], torch.finfo(dtype).min)
        positions = torch.arange(length, device=device).expand(b, -1)
        out = self.backbone.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False
        )
        start = lead - 1 + prompt  # the last prompt token: the reference's NUM_PATCHES + NUM_PROMPT_TOKENS
        index = (start + torch.arange(slots, device=device)[None])[..., None].expand(b, slots, width)
        features = out.last_hidden_state.gather(1, index).float()
        return features.reshape(b, self.chunk_size, self.action_dim * width)

    def bc_loss(
        self, batch: Batch, actions: torch.Tensor, stage: str = "policy", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """stage "scale": the Laplace likelihood of the scale head around the frozen means; "policy": L1 + it."""
        if stage != "scale":
            return super().bc_loss(batch, actions, stage, mask)
        with torch.no_grad():
            features = self.hidden(batch)
            mean = self.action_head(features)
        target = self.to_policy_units(actions.to(mean.device))
        mask = None if mask is None else mask.to(mean.device)
        return -masked_mean(Laplace(mean, self.scale(features)).log_prob(target).mean(-1), mask)


def center_crop(x: torch.Tensor, area: float = CROP_AREA) -> torch.Tensor:
    """The central `area` of images (B, 3, H, W) in [0, 1], resized back to H x W as OFT's TensorFlow crop does:
    bilinear with corner-aligned sampling, then 8-bit quantization (convert_image_dtype's scale of 255.5)."""
    b, _, h, w = x.shape
    side = float(np.sqrt(area))
    lo, hi = (1 - side) / 2, (1 + side) / 2
    ys, xs = torch.linspace(2 * lo - 1, 2 * hi - 1, h), torch.linspace(2 * lo - 1, 2 * hi - 1, w)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).to(x)
    cropped = F.grid_sample(x, grid.expand(b, h, w, 2), mode="bilinear", align_corners=True)
    return torch.floor((cropped * 255.5).clamp(0, 255)) / 255.0
