"""A released OpenVLA-OFT checkpoint folder, read as published: its files, its key map, its refusals.

The folder (e.g. moojink/openvla-7b-oft-finetuned-libero-spatial, downloaded beforehand):

    config.json                        OpenVLAConfig: vision_backbone_id, image_sizes, text_config, norm_stats
    model.safetensors.index.json       weight_map: checkpoint key -> shard (or one model.safetensors)
    model-0000N-of-0000M.safetensors   the VLM: vision_backbone.*, projector.*, language_model.*
    dataset_statistics.json            {unnorm_key: {"action": {q01, q99, min, max, mask}, "proprio": {...}}}
    action_head--<step>_checkpoint.pt        the L1 regression head's state dict (maybe DDP `module.`-prefixed)
    proprio_projector--<step>_checkpoint.pt  the proprioception projector's state dict
    tokenizer files; preprocessor_config.json (optional: the two backbones' image means and stds)

The VLM's vision weights are timm's; here they load into transformers' DINOv2-with-registers and
SigLIP. Key map (checkpoint -> module; `i` a block index, `D` the last block):

    vision_backbone.featurizer.*  (DINOv2 ViT with 4 registers)  -> dino.*
        cls_token / reg_token        -> embeddings.cls_token / embeddings.register_tokens
        pos_embed (1, P, C)          -> embeddings.position_embeddings (1, 1 + P, C): a zero row first, since
                                        timm adds no position to the class token (no_embed_class)
        patch_embed.proj.*           -> embeddings.patch_embeddings.projection.*
        blocks.i.attn.qkv.*          -> encoder.layer.i.attention.{q,k,v}_proj.* (split in three along rows)
        blocks.i.attn.proj.*         -> encoder.layer.i.attention.o_proj.*
        blocks.i.ls{1,2}.scale_factor (or .gamma) -> encoder.layer.i.layer_scale{1,2}.lambda1
        blocks.i.{norm1,norm2,mlp.fc1,mlp.fc2}.* -> encoder.layer.i.{same}.*
        norm.*                       -> layernorm.*
    vision_backbone.fused_featurizer.*  (SigLIP)  -> siglip.*
        pos_embed (1, P, C)          -> embeddings.position_embedding.weight (P, C)
        patch_embed.proj.*           -> embeddings.patch_embedding.*
        blocks.i.attn.qkv.* / attn.proj.* -> encoder.layers.i.self_attn.{q,k,v}_proj.* / out_proj.*
        blocks.i.norm1 / norm2 / mlp.* -> encoder.layers.i.layer_norm1 / layer_norm2 / mlp.*
        norm.*                       -> post_layernorm.*
    projector.fc{1,2,3}.*            -> projector.fc{1,2,3}.*
    language_model.model.*           -> language_model.* (transformers' LlamaModel)
    read and not used: blocks.D.* of both towers (OpenVLA takes the second-to-last block's patches),
    SigLIP's attn_pool.* (the pooled feature), language_model.lm_head.weight (no tokens are decoded).

Heads: a tower's width over its architecture's head size (64 for DINOv2 ViT-L, 72 for SigLIP so400m),
so the real sizes come out as released and a tiny checkpoint in the same layout loads the same way.
Anything else in a file (an unknown key, a missing one, a shape that does not fit, a pickle that
needs more than tensors) is refused with a `CheckpointError` naming the file and the key.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ript_robot.types import CheckpointError

INDEX_FILE, SINGLE_FILE = "model.safetensors.index.json", "model.safetensors"
STATISTICS_FILE = "dataset_statistics.json"
FUSED_BACKBONES = ("dinosiglip-vit-so-224px", "dinosiglip-vit-so-384px")
HEAD_SIZE = {"dino": 64, "siglip": 72}  # DINOv2 ViT-L/14: 1024 / 16 heads; SigLIP so400m/14: 1152 / 16
TOWERS = {"featurizer": "dino", "fused_featurizer": "siglip"}
Transform = Callable[[torch.Tensor], torch.Tensor]


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: is {path.parent} a released OpenVLA-OFT checkpoint folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def read_config(folder: Path) -> dict[str, Any]:
    """config.json, checked for the fields this family reads."""
    config = read_json(folder / "config.json")
    path = folder / "config.json"
    for key in ("vision_backbone_id", "image_sizes", "text_config"):
        if key not in config:
            raise CheckpointError(f"{path} lacks '{key}': not an OpenVLA config")
    if config["vision_backbone_id"] not in FUSED_BACKBONES or not config.get("use_fused_vision_backbone", True):
        raise CheckpointError(
            f"{path}: vision_backbone_id {config['vision_backbone_id']!r} is not supported; openvla_oft loads the "
            f"fused DINOv2 + SigLIP backbones the OpenVLA-OFT releases use: {list(FUSED_BACKBONES)}"
        )
    if config["text_config"].get("model_type", "llama") != "llama":
        raise CheckpointError(
            f"{path}: text_config.model_type must be 'llama' (Llama-2), got its {config['text_config']}"
        )
    sizes = config["image_sizes"]
    if len(sizes) != 2 or sizes[0] != sizes[1]:
        raise CheckpointError(f"{path}: image_sizes must be two equal sides (DINOv2, SigLIP), got {sizes}")
    return config


def shards(folder: Path) -> dict[str, Path]:
    """Checkpoint key -> the safetensors file that holds it (from the index, or the one file)."""
    index = folder / INDEX_FILE
    if not index.is_file():
        single = folder / SINGLE_FILE
        if not single.is_file():
            raise CheckpointError(f"{folder} has neither {INDEX_FILE} nor {SINGLE_FILE}")
        with safe_open(str(single), "pt") as f:
            return dict.fromkeys(f.keys(), single)
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no 'weight_map' of keys to shard files")
    files = {name: folder / name for name in set(weight_map.values())}
    for name, path in files.items():
        if not path.is_file():
            raise CheckpointError(f"{index} names the shard {name}, which is not in {folder}")
    return {key: files[name] for key, name in weight_map.items()}


def shapes(where: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Every key's shape, read from the shards' headers (no tensor is loaded)."""
    out: dict[str, tuple[int, ...]] = {}
    for path in sorted(set(where.values())):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                out[key] = tuple(f.get_slice(key).get_shape())
    return out


def tower_sizes(shape: dict[str, tuple[int, ...]], tower: str, image_size: int) -> dict[str, int]:
    """A vision tower's width, depth, patch, MLP width, heads and registers, from its weights' shapes."""
    prefix = f"vision_backbone.{tower}."
    kind = TOWERS[tower]

    def need(key: str) -> tuple[int, ...]:
        if prefix + key not in shape:
            raise CheckpointError(f"the checkpoint lacks '{prefix + key}' (the {kind} tower)")
        return shape[prefix + key]

    width = need("pos_embed")[-1]
    patch = need("patch_embed.proj.weight")[-1]
    depth = 1 + max(int(m.group(1)) for k in shape if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k)))
    if image_size % patch or need("pos_embed")[1] != (image_size // patch) ** 2:
        raise CheckpointError(
            f"'{prefix}pos_embed' has {need('pos_embed')[1]} positions, but image_sizes {image_size} with "
            f"{patch}-pixel patches gives {(image_size // patch) ** 2}"
        )
    if width % HEAD_SIZE[kind]:
        raise CheckpointError(f"the {kind} tower is {width} wide, not a multiple of its head size {HEAD_SIZE[kind]}")
    if depth < 2:
        raise CheckpointError(f"the {kind} tower has {depth} block; OpenVLA reads the second-to-last, so needs 2")
    sizes = {"width": width, "depth": depth, "patch": patch, "mlp": need("blocks.0.mlp.fc1.weight")[0]}
    sizes["heads"] = width // HEAD_SIZE[kind]
    sizes["registers"] = need("reg_token")[1] if kind == "dino" else 0
    return sizes


def _rows(part: int) -> Transform:
    return lambda t: t.chunk(3, dim=0)[part]


def _timm_block(rest: str, kind: str) -> list[tuple[str, Transform | None]]:
    """One timm block key (after `blocks.i.`) -> the transformers keys (after the layer prefix) it fills."""
    if kind == "dino":
        attention, out, norms = "attention.", "attention.o_proj", ("norm1", "norm2")
    else:
        attention, out, norms = "self_attn.", "self_attn.out_proj", ("layer_norm1", "layer_norm2")
    name, _, leaf = rest.rpartition(".")
    if name == "attn.qkv":
        return [(f"{attention}{p}_proj.{leaf}", _rows(i)) for i, p in enumerate("qkv")]
    if name == "attn.proj":
        return [(f"{out}.{leaf}", None)]
    if name in ("norm1", "norm2"):
        return [(f"{norms[int(name[-1]) - 1]}.{leaf}", None)]
    if name in ("mlp.fc1", "mlp.fc2"):
        return [(rest, None)]
    if kind == "dino" and name in ("ls1", "ls2") and leaf in ("scale_factor", "gamma"):
        return [(f"layer_scale{name[-1]}.lambda1", None)]
    return []


def map_key(key: str, depth: dict[str, int]) -> list[tuple[str, Transform | None]] | None:
    """A checkpoint key -> [(module key, transform)], [] when read and not used, None when unknown."""
    if key.startswith("language_model.model."):
        return [("language_model." + key.removeprefix("language_model.model."), None)]
    if key == "language_model.lm_head.weight":
        return []
    if re.fullmatch(r"projector\.fc[123]\.(weight|bias)", key):
        return [(key, None)]
    match = re.fullmatch(r"vision_backbone\.(featurizer|fused_featurizer)\.(.+)", key)
    if match is None:
        return None
    kind, rest = TOWERS[match.group(1)], match.group(2)
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
    if block:
        index = int(block.group(1))
        mapped = _timm_block(block.group(2), kind)
        if not mapped:
            return None
        if index == depth[kind] - 1:  # the last block: its output is not OpenVLA's feature
            return []
        layer = f"{kind}.encoder.{'layer' if kind == 'dino' else 'layers'}.{index}."
        return [(layer + target, fn) for target, fn in mapped]
    if kind == "dino":
        table: dict[str, tuple[str, Transform | None]] = {
            "cls_token": ("embeddings.cls_token", None),
            "reg_token": ("embeddings.register_tokens", None),
            "pos_embed": (
                "embeddings.position_embeddings",
                lambda t: torch.cat([t.new_zeros(1, 1, t.shape[-1]), t], 1),
            ),
            "patch_embed.proj.weight": ("embeddings.patch_embeddings.projection.weight", None),
            "patch_embed.proj.bias": ("embeddings.patch_embeddings.projection.bias", None),
            "norm.weight": ("layernorm.weight", None),
            "norm.bias": ("layernorm.bias", None),
        }
    else:
        if rest.startswith("attn_pool."):
            return []
        table = {
            "pos_embed": ("embeddings.position_embedding.weight", lambda t: t[0]),
            "patch_embed.proj.weight": ("embeddings.patch_embedding.weight", None),
            "patch_embed.proj.bias": ("embeddings.patch_embedding.bias", None),
            "norm.weight": ("post_layernorm.weight", None),
            "norm.bias": ("post_layernorm.bias", None),
        }
    if rest not in table:
        return None
    target, fn = table[rest]
    return [(f"{kind}.{target}", fn)]


def load_vlm(
    where: dict[str, Path], depth: dict[str, int], expected: dict[str, torch.Size], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The mapped tensors for the modules' keys `expected` (name -> shape), in `dtype`; every refusal names the
    file and the key: unknown, missing, or a shape that does not fit."""
    out: dict[str, torch.Tensor] = {}
    for path in sorted(set(where.values())):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                mapped = map_key(key, depth)
                if mapped is None:
                    raise CheckpointError(f"{path.name}: unknown key '{key}', not part of an OpenVLA-OFT checkpoint")
                stored = f.get_tensor(key) if mapped else None  # read once: a qkv tensor fills three weights
                for target, fn in mapped:
                    tensor = (fn(stored) if fn else stored).to(dtype).contiguous()
                    if target not in expected or tensor.shape != expected[target]:
                        want = tuple(expected[target]) if target in expected else "no such weight"
                        raise CheckpointError(
                            f"{path.name}: '{key}' gives {target} of shape {tuple(tensor.shape)}, the model built "
                            f"from config.json expects {want}"
                        )
                    out[target] = tensor
    return out


def find_part(folder: Path, name: str) -> Path:
    """The one `<name>--*.pt` file (OFT's `<name>--<step>_checkpoint.pt`)."""
    found = sorted(folder.glob(f"{name}--*.pt"))
    if len(found) != 1:
        raise CheckpointError(
            f"{folder} must hold exactly one {name}--<step>_checkpoint.pt, found {[p.name for p in found] or 'none'}"
        )
    return found[0]


def read_part(path: Path) -> dict[str, torch.Tensor]:
    """A `.pt` state dict read with torch.load(weights_only=True), a DDP `module.` prefix removed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{path.name} cannot be read as plain weights: torch.load(weights_only=True) refused it ({exc}). "
            "Only state dicts of tensors are loaded; re-save the part with torch.save(module.state_dict())"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} holds a {type(state).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_part(path: Path, state: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    """Refuse a part whose keys or shapes do not fit `module`, naming the file and the key."""
    expected = module.state_dict()
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{path.name}: unknown key '{key}'; expected {sorted(expected)}")
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"{path.name}: missing key '{key}'")
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path.name}: '{key}' has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)} from the "
                "language model's width and the action and proprio sizes"
            )


def dataset_statistics(folder: Path, config: dict[str, Any], unnorm_key: str) -> dict[str, Any]:
    """The statistics of one dataset: dataset_statistics.json (or config.json's norm_stats), by `unnorm_key`."""
    path = folder / STATISTICS_FILE
    stats = read_json(path) if path.is_file() else config.get("norm_stats") or {}
    source = path.name if path.is_file() else "config.json norm_stats"
    if not stats:
        raise CheckpointError(
            f"{folder} has no {STATISTICS_FILE} and config.json no norm_stats: actions cannot be un-normalized"
        )
    if not unnorm_key:
        if len(stats) != 1:
            raise CheckpointError(f"{source} holds {sorted(stats)}: set policy.openvla_oft.unnorm_key to one of them")
        unnorm_key = next(iter(stats))
    if unnorm_key not in stats:
        raise CheckpointError(
            f"{source} has no '{unnorm_key}' (policy.openvla_oft.unnorm_key); it holds {sorted(stats)}"
        )
    entry = stats[unnorm_key]
    for part in ("action", "proprio"):
        if part not in entry:
            raise CheckpointError(f"{source}: '{unnorm_key}' lacks its '{part}' statistics")
    return entry
