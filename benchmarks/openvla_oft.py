"""The openvla_oft loader's check on a tiny random checkpoint in the released layout, and the 7B figures
where a GPU is available.

On the tiny checkpoint (`policies.tiny_openvla`, written here): does it load, how many parameters it
has and how many RIPT trains (LoRA rank 32 on Llama, the action head, the proprio projector and the
scale head), and how far re-scoring a batch of sampled chunks is from the log-probabilities act()
reported (the PPO ratio's starting error). The same counts for the released 7B shapes (DINOv2 ViT-L/14
with registers, SigLIP so400m/14, Llama-2-7B, LIBERO's 7 actions and 8-number proprio) come from the
model built on the meta device, which allocates nothing (the towers' last blocks and the LM head, which no
action uses, are not built). The 7B timing keys (act() latency at batch 1, seconds per PPO
update on one group of K=8 episodes, peak GPU memory) need a GPU and the real weights' shapes; on a
machine without one they are null and `note` says so.

    python benchmarks/openvla_oft.py [--smoke]

Prints the figures and saves benchmarks/results/openvla_oft.json (--smoke: saves nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ript_robot.config import OftConfig, OpenVlaOftConfig, PolicyConfig
from ript_robot.envs.pick import PickEnv, make_contexts
from ript_robot.policies import make_policy
from ript_robot.policies.oft import transformers_module
from ript_robot.policies.openvla_oft import ActionHead, OpenVlaBackbone, TwoLayer
from ript_robot.policies.tiny_openvla import save_tiny_openvla_oft

RESULTS = Path(__file__).parent / "results"
DINO_7B = {"width": 1024, "depth": 24, "patch": 14, "mlp": 4096, "heads": 16, "registers": 4}
SIGLIP_7B = {"width": 1152, "depth": 27, "patch": 14, "mlp": 4304, "heads": 16, "registers": 0}
LLAMA_7B = {"vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32}


def counts_7b(oft: OftConfig) -> tuple[int, int]:
    """(parameters, trainable parameters) of the family at the released 7B LIBERO shapes, on the meta device."""
    transformers_module()  # peft imports transformers: with a broken torchvision marked absent first
    from peft import LoraConfig, inject_adapter_in_model

    with torch.device("meta"):
        backbone = OpenVlaBackbone(DINO_7B, SIGLIP_7B, {**LLAMA_7B, "num_attention_heads": 32}, 224)
        backbone.requires_grad_(False)
        lora = LoraConfig(r=oft.lora_rank, lora_alpha=oft.lora_alpha, target_modules=oft.lora_targets)
        inject_adapter_in_model(lora, backbone.language_model)
        width, actions = LLAMA_7B["hidden_size"], 7
        scale = nn.Sequential(nn.LayerNorm(width * actions), nn.Linear(width * actions, actions))
        heads = nn.ModuleList([ActionHead(width, actions), TwoLayer(8, width), scale])
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    trainable += sum(p.numel() for p in heads.parameters())
    return sum(p.numel() for p in backbone.parameters()) + sum(p.numel() for p in heads.parameters()), trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="save nothing (CI)")
    args = parser.parse_args()
    torch.manual_seed(0)
    folder = save_tiny_openvla_oft(Path(tempfile.mkdtemp(prefix="openvla_oft_")) / "checkpoint", image_size=64)
    env = PickEnv(image_size=64)
    oft = OftConfig(backbone=str(folder), lora_rank=32, lora_alpha=32)
    config = PolicyConfig(family="openvla_oft", oft=oft, openvla_oft=OpenVlaOftConfig(cameras=["top"]))
    start = time.perf_counter()
    policy = make_policy(config, env.spec)
    load_s = time.perf_counter() - start
    observations = [env.reset(c) for c in make_contexts("workcell", range(8))[:8]]
    chunks = policy.act(observations)
    with torch.no_grad():
        rescored = policy.log_prob(
            policy.preprocess(observations), torch.from_numpy(np.stack([c.actions for c in chunks]))
        )
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    result = {
        "checkpoint": "tiny random, released layout (policies.tiny_openvla): towers 128/144 wide, Llama width 64",
        "loaded": True,
        "load_s": load_s,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable_parameters": sum(p.numel() for p in policy.rl_parameters()),
        "rescore_error": float((rescored - reported).abs().max()),
        "parameters_7b": None,
        "trainable_parameters_7b": None,
        "act_latency_7b_batch_1_ms": None,
        "ppo_update_7b_k8_s": None,
        "peak_gpu_memory_7b_gb": None,
        "note": "no GPU in this session (the device tool's status: not drawn), so the 7B timing keys are null; "
        "the 7B parameter counts are from shapes alone",
    }
    result["parameters_7b"], result["trainable_parameters_7b"] = counts_7b(oft)
    print(json.dumps(result, indent=2))
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "openvla_oft.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
