"""A tiny random OpenVLA-OFT checkpoint folder in exactly the released layout (nothing is downloaded).

Tests, benchmarks and CPU runs of the `openvla_oft` family need a checkpoint; the real ones are 7B.
This writes the files a release holds, with the release's file names, key names (timm's for the two
vision towers, Prismatic's for the projector, Llama's under `language_model.`), config fields and
`.pt` parts (the action head saved as DDP does, `module.`-prefixed), at tiny sizes and random weights.
The names here are written from the reference's published layout, not from this package's key map,
so loading it tests the map.

    python -m ript_robot.policies.tiny_openvla FOLDER   # then policy.family=openvla_oft policy.oft.backbone=FOLDER
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ript_robot.envs.pick import TASKS
from ript_robot.policies.oft import transformers_module
from ript_robot.policies.openvla_oft import DINO_STATS, SIGLIP_STATS
from ript_robot.policies.tiny_vlm import tiny_tokenizer

LLAMA_TOKENS = ["<unk>", "<s>", "</s>", "▁", "<PAD>"]  # Llama's unk, BOS, EOS and empty token; OpenVLA's pad


@dataclass(frozen=True)
class Sizes:
    """A release's widths and depths: tiny by default; `RELEASED_7B` is OpenVLA-OFT's."""

    dino: tuple[int, int, int] = (128, 3, 512)  # DINOv2 width, blocks, MLP width (heads: width / 64)
    siglip: tuple[int, int, int] = (144, 3, 576)  # SigLIP width, blocks, MLP width (heads: width / 72)
    llama: tuple[int, int, int, int] = (64, 2, 4, 128)  # Llama width, layers, heads, MLP width
    patch: int = 8


RELEASED_7B = Sizes((1024, 24, 4096), (1152, 27, 4304), (4096, 32, 32, 11008), 14)


def _timm_tower(width: int, depth: int, mlp: int, patch: int, positions: int, dino: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a timm ViT as Prismatic saves it: DINOv2 with 4 registers and patched LayerScale
    (`scale_factor`), or SigLIP without a class token and with its attention-pool head."""
    keys: dict[str, tuple[int, ...]] = {"pos_embed": (1, positions, width)}
    keys |= {"patch_embed.proj.weight": (width, 3, patch, patch), "patch_embed.proj.bias": (width,)}
    if dino:
        keys |= {"cls_token": (1, 1, width), "reg_token": (1, 4, width)}
    for i in range(depth):
        block = {
            "norm1.weight": (width,),
            "norm1.bias": (width,),
            "attn.qkv.weight": (3 * width, width),
            "attn.qkv.bias": (3 * width,),
            "attn.proj.weight": (width, width),
            "attn.proj.bias": (width,),
            "norm2.weight": (width,),
            "norm2.bias": (width,),
            "mlp.fc1.weight": (mlp, width),
            "mlp.fc1.bias": (mlp,),
            "mlp.fc2.weight": (width, mlp),
            "mlp.fc2.bias": (width,),
        }
        if dino:
            block |= {"ls1.scale_factor": (width,), "ls2.scale_factor": (width,)}
        keys |= {f"blocks.{i}.{k}": v for k, v in block.items()}
    keys |= {"norm.weight": (width,), "norm.bias": (width,)}
    if not dino:
        pool = {
            "latent": (1, 1, width),
            "q.weight": (width, width),
            "q.bias": (width,),
            "kv.weight": (2 * width, width),
            "kv.bias": (2 * width,),
            "proj.weight": (width, width),
            "proj.bias": (width,),
            "norm.weight": (width,),
            "norm.bias": (width,),
            "mlp.fc1.weight": (mlp, width),
            "mlp.fc1.bias": (mlp,),
            "mlp.fc2.weight": (width, mlp),
            "mlp.fc2.bias": (width,),
        }
        keys |= {f"attn_pool.{k}": v for k, v in pool.items()}
    return keys


def _random(shape: tuple[int, ...], key: str, generator: torch.Generator) -> torch.Tensor:
    """Weights ~ N(0, 0.02^2); norm scales near 1; LayerScale 0.1; position and token embeddings ~ N(0, 0.1^2)."""
    noise = torch.randn(shape, generator=generator, dtype=torch.bfloat16 if len(shape) > 1 else torch.float32)
    if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "ffn.0.weight")):  # LayerNorm scales
        return 1.0 + 0.05 * noise
    if key.endswith("scale_factor"):
        return 0.1 + 0.01 * noise
    if key.endswith(("pos_embed", "cls_token", "reg_token", "latent")):
        return 0.1 * noise
    return 0.02 * noise


def _statistics(dim: int, low: float, high: float, masked_last: bool) -> dict[str, list]:
    """OFT's per-dimension statistics of a dataset whose values spread over part of [low, high]."""
    span = torch.linspace(0.6, 0.9, dim)
    centre = (low + high) / 2 + 0.05 * torch.linspace(-1, 1, dim) * (high - low)
    q01, q99 = centre - span * (high - low) / 2, centre + span * (high - low) / 2
    mask = [True] * dim
    if masked_last:
        mask[-1] = False  # OFT leaves the gripper unnormalized
    return {
        "mean": centre.tolist(),
        "std": (span * (high - low) / 4).tolist(),
        "q01": q01.tolist(),
        "q99": q99.tolist(),
        "min": (q01 - 0.05).tolist(),
        "max": (q99 + 0.05).tolist(),
        "mask": mask,
    }


def save_tiny_openvla_oft(
    folder: str | Path,
    image_size: int = 32,
    state_dim: int = 3,
    action_dim: int = 3,
    action_bounds: tuple[float, float] = (-1.0, 1.0),
    unnorm_key: str = "tiny_dataset",
    texts: Iterable[str] = TASKS,
    sizes: Sizes = Sizes(),
    seed: int = 0,
) -> Path:
    """Write the folder; returns it. image_size: both towers' input side (a multiple of sizes.patch);
    state_dim, action_dim: the proprio and action sizes of its parts; sizes: the towers' and Llama's
    (tiny by default: 2 heads a tower, Llama 64 wide; `RELEASED_7B` writes about 15 GB)."""
    patch_size, (width, layers, heads, mlp) = sizes.patch, sizes.llama
    if image_size % patch_size or width % heads:
        raise ValueError(
            f"image_size ({image_size}) must be a multiple of the patch ({patch_size}), {width} of {heads}"
        )
    t = transformers_module()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(texts, LLAMA_TOKENS)
    tokenizer.pad_token = "<PAD>"
    tokenizer.save_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    positions = (image_size // patch_size) ** 2
    dino, siglip = (
        _timm_tower(*sizes.dino, patch_size, positions, True),
        _timm_tower(*sizes.siglip, patch_size, positions, False),
    )
    shapes = {f"vision_backbone.featurizer.{k}": v for k, v in dino.items()}
    shapes |= {f"vision_backbone.fused_featurizer.{k}": v for k, v in siglip.items()}
    vision = sizes.dino[0] + sizes.siglip[0]
    for name, (rows, cols) in {"fc1": (4 * vision, vision), "fc2": (width, 4 * vision), "fc3": (width, width)}.items():
        shapes |= {f"projector.{name}.weight": (rows, cols), f"projector.{name}.bias": (rows,)}
    tensors = {key: _random(shape, key, generator) for key, shape in shapes.items()}
    vocab = -(-len(tokenizer) // 64) * 64  # OpenVLA pads the embeddings to a multiple of 64
    text_config = {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "torch_dtype": "bfloat16",
    }
    with torch.device("meta"):  # names and shapes only: a 7B Llama is never initialized here
        llm = t.LlamaForCausalLM(t.LlamaConfig(**text_config))
    tensors |= {f"language_model.{k}": _random(tuple(v.shape), k, generator) for k, v in llm.state_dict().items()}
    keys = sorted(tensors)
    index = {}
    for n, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), start=1):
        name = f"model-0000{n}-of-00002.safetensors"
        save_file({k: tensors[k].to(torch.bfloat16).contiguous() for k in part}, str(folder / name), {"format": "pt"})
        index |= dict.fromkeys(part, name)
    total = sum(v.numel() * 2 for v in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2)
    )
    low, high = action_bounds
    stats = {
        unnorm_key: {
            "action": _statistics(action_dim, low, high, masked_last=True),
            "proprio": _statistics(state_dim, -1.0, 1.0, masked_last=False),
            "num_transitions": 1000,
            "num_trajectories": 10,
        }
    }
    (folder / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
    config = {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [image_size, image_size],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "llm_max_length": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "pad_to_multiple_of": 64,
        "n_action_bins": 256,
        "norm_stats": stats,
        "output_projector_states": False,
        "text_config": text_config,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    processor = {
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, image_size, image_size]] * 2,
        "interpolations": ["bicubic", "bicubic"],
        "means": [list(DINO_STATS[0]), list(SIGLIP_STATS[0])],
        "stds": [list(DINO_STATS[1]), list(SIGLIP_STATS[1])],
        "use_fused_vision_backbone": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    head = {"model.layer_norm1.weight": (action_dim * width,), "model.layer_norm1.bias": (action_dim * width,)}
    head |= {"model.fc1.weight": (width, action_dim * width), "model.fc1.bias": (width,)}
    for j in range(2):
        block = f"model.mlp_resnet_blocks.{j}.ffn"
        head |= {f"{block}.0.weight": (width,), f"{block}.0.bias": (width,)}
        head |= {f"{block}.1.weight": (width, width), f"{block}.1.bias": (width,)}
    head |= {"model.layer_norm2.weight": (width,), "model.layer_norm2.bias": (width,)}
    head |= {"model.fc2.weight": (action_dim, width), "model.fc2.bias": (action_dim,)}
    head_state = {f"module.{k}": _random(v, k, generator) for k, v in head.items()}  # saved under DDP
    head_state["module.model.fc2.weight"] *= 10  # means spread over the normalized range
    torch.save(head_state, folder / "action_head--100_checkpoint.pt")
    proprio = {
        "fc1.weight": (width, state_dim),
        "fc1.bias": (width,),
        "fc2.weight": (width, width),
        "fc2.bias": (width,),
    }
    torch.save(
        {k: _random(v, k, generator) * 10 for k, v in proprio.items()}, folder / "proprio_projector--100_checkpoint.pt"
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="where to write the checkpoint")
    parser.add_argument("--image-size", type=int, default=32, help="camera side the checkpoint takes, pixels")
    parser.add_argument("--state-dim", type=int, default=3, help="proprio size (LIBERO: 8)")
    parser.add_argument("--action-dim", type=int, default=3, help="action size (LIBERO: 7)")
    args = parser.parse_args()
    print(save_tiny_openvla_oft(args.folder, args.image_size, args.state_dim, args.action_dim))


if __name__ == "__main__":
    main()
