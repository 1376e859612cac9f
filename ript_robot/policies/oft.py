"""The OpenVLA-OFT-style policy: a transformers VLM with LoRA, a parallel-decoding action head, a Laplace scale.

OpenVLA-OFT (Kim et al., 2025) fine-tunes a 7B VLA with LoRA and replaces token-by-token
action decoding with one forward pass that predicts the whole chunk, trained with L1; RIPT
post-trains it with a scale head added so every action has a log-probability. Here:

- the backbone is any LLaVA-style VLM that transformers' `AutoModel` loads with
  `from_pretrained` (a hub id or a local folder): it must offer `get_image_features` (vision
  tower + projector into the language model's width) and take `inputs_embeds`;
- one sequence per observation: the image patches of every camera, the prompt with the
  instruction, one proprioception token, then H action placeholders (learned embeddings).
  The last hidden states of the placeholders are decoded in parallel by an MLP into the H
  actions' means. The decoder keeps its causal mask: the placeholders carry no information of
  their own, so each already sees the whole observation, as OFT's bidirectional ones do;
- SFT trains the mean with L1 (OFT's objective) and the scale head with the Laplace
  likelihood of the demonstrations around the detached mean, on detached hidden states, so
  the scale never changes the trunk's objective; RIPT's log-probability is that Laplace
  law per action dimension, of the command sent (the mass beyond a bound for a clipped
  action: `bounded_log_prob`), and its update trains trunk, mean and scale together;
- LoRA adapters (peft) go on the language model's linear layers named in
  `policy.oft.lora_targets`; the vision tower and every base weight stay frozen, so
  `rl_parameters` are the adapters, the heads, the proprioception projector and the
  placeholders, and the checkpoint holds only those (`checkpoint_state`): the backbone is
  named in the config and loaded from it, so a 7B policy publishes ~160 MB (rank 16), not 28 GB.

Images are resized and normalized in torch with the mean and std of the checkpoint's
`preprocessor_config.json`: transformers' image processors need torchvision, which PyPI's
wheels cannot import beside the CPU build of torch (../shared/SETUP-NOTES.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Laplace

from ript_robot.policies.base import Batch, CheckpointError, ConfiguredPolicy, masked_mean
from ript_robot.types import Observation

VISION_MODULES = ("vision_tower", "vision_model", "visual", "image_encoder")  # never adapted, always frozen
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@cache
def transformers_module() -> Any:
    """Import transformers (the `vla` extra) with a broken torchvision marked absent.

    PyPI's torchvision (robomimic pulls it in) may fail to load beside the CPU torch; transformers
    would then fail to import any model. Marked absent, transformers never touches it.
    """
    try:
        import torchvision  # noqa: F401
    except Exception:  # a broken binary raises RuntimeError or OSError, not only ImportError
        sys.modules["torchvision"] = None  # importlib.util.find_spec now reports it absent
    try:
        import transformers
    except ImportError as exc:
        raise ImportError('the oft policy family needs transformers and peft: pip install -e ".[vla]"') from exc
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _image_stats(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalization mean and std from the backbone's preprocessor_config.json (CLIP's when it has none)."""
    transformers = transformers_module()
    path = transformers.utils.cached_file(
        backbone, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False
    )
    if path is None:
        return CLIP_MEAN, CLIP_STD
    processor = json.loads(Path(path).read_text())
    return tuple(processor.get("image_mean", CLIP_MEAN)), tuple(processor.get("image_std", CLIP_STD))


class OftPolicy(ConfiguredPolicy):
    """VLM backbone with LoRA + parallel-decoding L1 action head + Laplace scale head (see the module doc)."""

    family = "oft"

    def build(self) -> None:
        """Load `config.oft.backbone` with from_pretrained, add the adapters, then the heads; cameras' patches
        enter the sequence in the order of `cameras`."""
        width = self.build_backbone()
        self.build_heads(width)
        self.place(self.config.oft.device, "policy.oft.device")

    def build_heads(self, width: int) -> None:
        """The L1 action head and the Laplace scale head on the placeholders' hidden states (width wide)."""
        config = self.config
        self.action_head = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, config.hidden_dim),
            nn.GELU(),
            nn.Linear(config.hidden_dim, self.action_dim),
        )
        self.scale_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.action_dim))

    def build_backbone(self) -> int:
        """The VLM with its adapters, the proprioception projector and the placeholders; returns the width."""
        config = self.config
        oft = config.oft
        transformers = transformers_module()
        try:
            revision = {"revision": oft.revision} if oft.revision else {}
            dtype = getattr(torch, oft.dtype)
            self.backbone = transformers.AutoModel.from_pretrained(oft.backbone, dtype=dtype, **revision)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(oft.backbone, **revision)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"cannot load the oft backbone {oft.backbone!r} (policy.oft.backbone: a hub id or a local folder "
                f"with a transformers VLM and its tokenizer): {exc}"
            ) from exc
        if not hasattr(self.backbone, "get_image_features"):
            raise CheckpointError(
                f"{oft.backbone!r} loads as {type(self.backbone).__name__}, which has no get_image_features: "
                "the oft family needs a LLaVA-style vision-language model"
            )
        vision = self.backbone.config.vision_config
        side = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
        self.vision_size = int(side)
        mean, std = _image_stats(oft.backbone)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._add_adapters()
        width = self.backbone.get_input_embeddings().embedding_dim
        self.proprio = nn.Linear(self.state_dim, width)
        self.placeholders = nn.Parameter(torch.randn(config.chunk_size, width) * 0.02)
        self._token_cache: dict[str, list[int]] = {}
        bos = self.tokenizer.bos_token_id
        self._leading_bos = int(bos is not None and self.tokenizer("x")["input_ids"][:1] == [bos])
        return width

    def _add_adapters(self, root: nn.Module | None = None) -> None:
        """LoRA (peft) on the target layers of the language model (inside `root`, the backbone by default);
        every base weight of the backbone frozen."""
        from peft import LoraConfig, inject_adapter_in_model

        oft = self.config.oft
        root = self.backbone if root is None else root
        linear = [name for name, module in root.named_modules() if isinstance(module, nn.Linear)]
        targets = [
            name
            for name in linear
            if name.rsplit(".", 1)[-1] in oft.lora_targets and not set(name.split(".")) & set(VISION_MODULES)
        ]
        if not targets:
            raise CheckpointError(
                f"none of policy.oft.lora_targets {oft.lora_targets} names a linear layer of the language model "
                f"of {oft.backbone!r}; its linear layers end in {sorted({n.rsplit('.', 1)[-1] for n in linear})}"
            )
        self.backbone.requires_grad_(False)
        # no dropout: RIPT's PPO ratio needs the update to score chunks exactly as act() did
        lora = LoraConfig(r=oft.lora_rank, lora_alpha=oft.lora_alpha, lora_dropout=0.0, target_modules=targets)
        inject_adapter_in_model(lora, root)  # adapters are created trainable, the rest stays frozen
        for parameter in self.backbone.parameters():
            if parameter.requires_grad:  # adapters train in float32 beside a bfloat16 backbone (peft casts)
                parameter.data = parameter.data.float()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What training changes: adapters, heads, projector, placeholders (the backbone is named in the config)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.") or ".lora_" in k}

    def rl_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def preprocess(self, observations: Sequence[Observation]) -> Batch:
        images, states = self.stack_observations(observations)
        tokens = [self.prompt_ids(obs.instruction) for obs in observations]
        length = max(map(len, tokens))
        ids = np.full((len(tokens), length), self.tokenizer.pad_token_id or 0, np.int64)
        mask = np.zeros((len(tokens), length), np.int64)
        for i, t in enumerate(tokens):
            ids[i, : len(t)], mask[i, : len(t)] = t, 1
        return {
            "image": images,
            "state": states,
            "tokens": torch.from_numpy(ids),
            "token_mask": torch.from_numpy(mask),
        }

    def prompt_ids(self, instruction: str) -> list[int]:
        """The token ids of the prompt around `instruction` (cached per instruction)."""
        if instruction not in self._token_cache:
            prompt = self.config.oft.prompt.format(instruction=instruction.lower().rstrip("."))
            self._token_cache[instruction] = self.tokenizer(prompt)["input_ids"]
        return self._token_cache[instruction]

    def _image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W, 3) uint8 -> (B, N x patches, width) embeddings from the vision tower and projector."""
        b = image.shape[0]
        x = image.flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
        size = (self.vision_size, self.vision_size)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = ((x - self.pixel_mean) / self.pixel_std).to(self.backbone.dtype)
        out = self.backbone.get_image_features(pixel_values=x)
        features = getattr(out, "pooler_output", out)  # transformers 5 wraps them, 4 returns the tensor
        if isinstance(features, (list, tuple)):
            features = torch.stack(list(features))
        return features.reshape(b, -1, features.shape[-1])

    def sequence(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's input embeddings and attention mask: [BOS] patches prompt proprio placeholders.

        A tokenizer that starts the prompt with BOS keeps it first, before the patches, where a
        LLaVA or OpenVLA backbone saw it in pretraining."""
        device, dtype = self.placeholders.device, self.backbone.dtype
        batch = {k: v.to(device) for k, v in batch.items()}
        patches = self._image_tokens(batch["image"])
        words = self.backbone.get_input_embeddings()(batch["tokens"])
        b, lead = words.shape[0], self._leading_bos
        proprio = self.proprio(batch["state"]).to(dtype)[:, None]
        placeholders = self.placeholders.to(dtype).expand(b, -1, -1)
        embeds = torch.cat([words[:, :lead], patches, words[:, lead:], proprio, placeholders], dim=1)
        text, ones = batch["token_mask"], batch["token_mask"].new_ones
        mask = torch.cat([text[:, :lead], ones(b, patches.shape[1]), text[:, lead:], ones(b, 1 + self.chunk_size)], 1)
        return embeds, mask

    def hidden(self, batch: Batch) -> torch.Tensor:
        """One parallel-decoding pass: the placeholders' last hidden states (B, H, width), float32."""
        embeds, mask = self.sequence(batch)
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # the prompt's padding does not shift later positions
        out = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, -self.chunk_size :].float()

    def scale(self, hidden: torch.Tensor) -> torch.Tensor:
        """Laplace scales (B, H, A) in [min_std, max_std]."""
        return self.bounded_scale(self.scale_head(hidden))

    def heads(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunk's action means and Laplace scales, each (B, H, A)."""
        hidden = self.hidden(batch)
        return self.action_head(hidden), self.scale(hidden)

    def log_prob(
        self, batch: Batch, actions: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """See `Policy.log_prob`; on the device `actions` came from, whatever device the policy runs on."""
        mean, scale = self.heads(batch)
        policy_units = self.to_policy_units(actions.to(mean.device))
        return self.command_log_prob(Laplace(mean, scale), policy_units).to(actions.device)

    def bc_loss(
        self, batch: Batch, actions: torch.Tensor, stage: str = "policy", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.hidden(batch)
        mean = self.action_head(hidden)
        actions = self.to_policy_units(actions.to(mean.device))
        mask = None if mask is None else mask.to(mean.device)
        l1 = masked_mean((mean - actions).abs().mean(-1), mask)
        # the scale head learns from what the L1-trained trunk gives it; it never changes the trunk or the mean
        scale_nll = -masked_mean(Laplace(mean.detach(), self.scale(hidden.detach())).log_prob(actions).mean(-1), mask)
        return l1 + scale_nll

    def sample(self, batch: Batch, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mean, scale = self.heads(batch)
        dist = Laplace(mean, scale)
        actions = mean if deterministic else dist.sample()
        return actions, self.command_log_prob(dist, actions)
