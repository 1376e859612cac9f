"""A tiny random LLaVA-style VLM written to a folder: the oft family's backbone where no real one can be loaded.

Tests, the latency benchmark and CPU smoke runs need a VLM without downloading one. This
builds it locally: a byte-level BPE tokenizer trained on a few texts (any other text still
encodes, byte by byte), a small CLIP vision tower and a small Llama language model joined
by LLaVA's projector, random weights. Saved with `save_pretrained`, it loads back through
exactly the `from_pretrained` path a real checkpoint takes.

    python -m ript_robot.policies.tiny_vlm FOLDER   # then policy.family=oft policy.oft.backbone=FOLDER
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ript_robot.config import OftConfig
from ript_robot.envs.pick import TASKS
from ript_robot.policies.oft import CLIP_MEAN, CLIP_STD, transformers_module

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>"]


def tiny_tokenizer(texts: Iterable[str], special: Sequence[str] = SPECIAL_TOKENS) -> Any:
    """A byte-level BPE tokenizer learned from `texts` and the default prompt; like Llama's, every text starts
    with BOS. special: its special tokens, among them <pad>, <s> (BOS) and </s> (EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=list(special), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([OftConfig().prompt, *texts], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return transformers_module().PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def save_tiny_vlm(
    folder: str | Path,
    texts: Iterable[str] = TASKS,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random VLM, its tokenizer and its image statistics to `folder`; returns it.

    texts: what the tokenizer's merges are learned from (the prompt is added); image_size:
    side in pixels of the vision tower's input, a multiple of patch_size; width: the language
    model's hidden size (a multiple of 8); layers: of each tower.
    """
    if image_size % patch_size or width % 8:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size}), width of 8")
    transformers = transformers_module()
    folder = Path(folder)
    fast = tiny_tokenizer(texts)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    vision = transformers.CLIPVisionConfig(
        hidden_size=width // 2,
        intermediate_size=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = transformers.LlamaConfig(
        vocab_size=len(fast),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=fast.convert_tokens_to_ids("<image>")
    )
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    stats = {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    (folder / "preprocessor_config.json").write_text(json.dumps(stats, indent=2))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="where to write the VLM")
    parser.add_argument("--image-size", type=int, default=32, help="vision tower input side, pixels")
    parser.add_argument("--width", type=int, default=64, help="language model hidden size")
    args = parser.parse_args()
    print(save_tiny_vlm(args.folder, image_size=args.image_size, width=args.width))


if __name__ == "__main__":
    main()
