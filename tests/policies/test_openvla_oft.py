"""Released OpenVLA-OFT checkpoints: a tiny random one in the released layout, checked against the reference's
computation restated here from its published code (timm's ViT, Prismatic's projector and `predict_action`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    IMAGE_SIZE,
    acted_batch,
    assert_same_acts,
    changed,
    make_env,
    observations,
    snapshot,
    tiny_openvla,
    tiny_policy,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from ript_robot.config import RIPTConfig, SFTConfig
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import expert_action, make_contexts
from ript_robot.policies import load_policy
from ript_robot.policies import openvla_files as files
from ript_robot.policies.base import CheckpointError
from ript_robot.policies.openvla_oft import OpenVlaBackbone, OpenVlaOftPolicy, center_crop
from ript_robot.rl.ppo import ppo_update
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset


def openvla(seed: int = 0, folder: Path | None = None, **overrides) -> OpenVlaOftPolicy:
    oft = {"backbone": str(folder)} if folder else {}
    return tiny_policy(seed, family="openvla_oft", oft={**oft, **overrides.pop("oft", {})}, **overrides)


def checkpoint_tensors() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(tiny_openvla().glob("model-*.safetensors")):
        out |= {k: v.float() for k, v in load_file(str(shard)).items()}
    return out


def statistics() -> dict:
    return next(iter(json.loads((tiny_openvla() / "dataset_statistics.json").read_text()).values()))


def timm_vit(t: dict[str, torch.Tensor], prefix: str, pixels: torch.Tensor, head_size: int) -> torch.Tensor:
    """timm's VisionTransformer.get_intermediate_layers(n={depth - 2}) as Prismatic calls it: the second-to-last
    block's tokens, no final norm, class and register tokens removed (DINOv2: positions on patches only)."""
    w = t[prefix + "patch_embed.proj.weight"]
    x = F.conv2d(pixels, w, t[prefix + "patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = x + t[prefix + "pos_embed"]
    dino = prefix + "cls_token" in t
    if dino:
        b = x.shape[0]
        x = torch.cat([t[prefix + "cls_token"].expand(b, -1, -1), t[prefix + "reg_token"].expand(b, -1, -1), x], 1)
    depth = 1 + max(int(k[len(prefix) :].split(".")[1]) for k in t if k.startswith(prefix + "blocks."))
    b, n, c = x.shape
    for i in range(depth - 1):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (c,), t[p + "norm1.weight"], t[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, c // head_size, head_size).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        a = F.linear(a, t[p + "attn.proj.weight"], t[p + "attn.proj.bias"])
        x = x + (t[p + "ls1.scale_factor"] * a if dino else a)
        h = F.layer_norm(x, (c,), t[p + "norm2.weight"], t[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"])), t[p + "mlp.fc2.weight"])
        h = h + t[p + "mlp.fc2.bias"]
        x = x + (t[p + "ls2.scale_factor"] * h if dino else h)
    return x[:, 5:] if dino else x


def test_the_fused_vision_backbone_matches_timms_computation_on_the_checkpoints_weights():
    policy = openvla(openvla_oft={"center_crop": False})
    t = checkpoint_tensors()
    obs = observations(2)
    image = torch.from_numpy(np.stack([o.images["top"] for o in obs]))[:, None]
    x = image[:, 0].permute(0, 3, 1, 2).float() / 255
    dino = timm_vit(t, "vision_backbone.featurizer.", (x - policy.dino_mean) / policy.dino_std, 64)
    siglip = timm_vit(t, "vision_backbone.fused_featurizer.", (x - 0.5) / 0.5, 72)
    h = torch.cat([dino, siglip], -1)
    for i, fn in ((1, F.gelu), (2, F.gelu), (3, None)):
        h = F.linear(h, t[f"projector.fc{i}.weight"], t[f"projector.fc{i}.bias"])
        h = fn(h) if fn else h
    with torch.no_grad():
        ours = policy._image_tokens(image)
    assert ours.shape == (2, (IMAGE_SIZE // 8) ** 2, 64)
    torch.testing.assert_close(ours, h, atol=1e-4, rtol=1e-4)


def test_center_crop_is_tensorflows_crop_and_resize():
    x = torch.rand(1, 3, 12, 12)
    side = np.sqrt(0.9)
    y1, y2 = (1 - side) / 2, (1 + side) / 2
    ref = np.zeros((3, 12, 12))
    img = x[0].numpy()
    for i in range(12):
        for j in range(12):  # tf.image.crop_and_resize, bilinear: sample at y1 (H - 1) + i (y2 - y1) (H - 1) / (h - 1)
            y, xx = (y1 + i * (y2 - y1) / 11) * 11, (y1 + j * (y2 - y1) / 11) * 11
            y0, x0 = int(np.floor(y)), int(np.floor(xx))
            dy, dx = y - y0, xx - x0
            ref[:, i, j] = (
                img[:, y0, x0] * (1 - dy) * (1 - dx) + img[:, y0, x0 + 1] * (1 - dy) * dx
                + img[:, y0 + 1, x0] * dy * (1 - dx) + img[:, y0 + 1, x0 + 1] * dy * dx
            )  # fmt: skip
    expected = np.floor(np.clip(ref * 255.5, 0, 255)) / 255  # convert_image_dtype(uint8, saturate=True)
    np.testing.assert_allclose(center_crop(x)[0].numpy(), expected, atol=1e-5)


def reference_means(policy: OpenVlaOftPolicy, obs, bidirectional: bool = True) -> torch.Tensor:
    """`predict_action` with the L1 head at batch 1, step by step as modeling_prismatic.py writes it."""
    stats = statistics()["proprio"]
    low, high, mask = (np.asarray(stats[k]) for k in ("q01", "q99", "mask"))
    proprio = np.clip(np.where(mask, 2 * (obs.state - low) / (high - low + 1e-8) - 1, obs.state), -1, 1)
    prompt = f"In: What action should the robot take to {obs.instruction.lower()}?\nOut:"
    tok = policy.tokenizer
    ids = tok(prompt)["input_ids"]
    empty = tok.convert_tokens_to_ids("▁")
    ids = ids if ids[-1] == empty else [*ids, empty]
    num_prompt = len(ids) - 1
    slots = policy.chunk_size * policy.action_dim
    ids = torch.tensor([[*ids, *([1] * slots), tok.eos_token_id]])
    lm = policy.backbone.language_model
    embeds = lm.get_input_embeddings()(ids)
    embeds[:, num_prompt + 1 : num_prompt + 1 + slots] = 0  # action tokens' embeddings zeroed
    image = torch.from_numpy(obs.images["top"])[None, None]
    patches = policy._image_tokens(image)
    proprio_token = policy.proprio_projector(torch.tensor(proprio, dtype=torch.float32)[None])[:, None]
    projected = torch.cat([patches, proprio_token], 1)
    sequence = torch.cat([embeds[:, :1], projected, embeds[:, 1:]], 1)
    n = sequence.shape[1]
    attention = torch.zeros(1, 1, n, n) if bidirectional else None
    hidden = lm(inputs_embeds=sequence, attention_mask=attention, use_cache=False).last_hidden_state
    start = projected.shape[1] + num_prompt  # NUM_PATCHES + NUM_PROMPT_TOKENS
    actions_hidden = hidden[:, start : start + slots]
    return policy.action_head(actions_hidden.reshape(1, policy.chunk_size, -1))[0]


def test_the_chunk_is_the_references_l1_prediction_unnormalized_into_robot_units():
    policy = openvla(seed=1)
    obs = observations(3)
    obs[1].instruction = "pick up the block that is furthest from the robot base"  # prompts of different lengths
    with torch.no_grad():
        means, scales = policy.heads(policy.preprocess(obs))
        for i, o in enumerate(obs):
            torch.testing.assert_close(means[i], reference_means(policy, o), atol=1e-4, rtol=1e-4)
        causal = reference_means(policy, obs[0], bidirectional=False)
    assert (causal - means[0]).abs().max() > 1e-3  # the attention pattern matters: the test can tell
    chunks = policy.act(obs, deterministic=True)
    action = statistics()["action"]
    low, high, mask = (np.asarray(action[k]) for k in ("q01", "q99", "mask"))
    for chunk, mean in zip(chunks, means.numpy(), strict=True):
        robot = np.where(mask, 0.5 * (mean + 1) * (high - low + 1e-8) + low, mean)
        np.testing.assert_allclose(chunk.actions, robot, atol=1e-5)
    assert ((scales >= 0.25) & (scales <= 1.0)).all()


def test_act_reports_the_log_prob_rescoring_gives_and_ppo_moves_only_the_trainable_parts():
    policy = openvla(seed=2)
    obs = observations(4)
    batch = acted_batch(policy, obs, [1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        rescored = policy.log_prob(batch.inputs, batch.actions)
    torch.testing.assert_close(rescored, batch.old_log_prob, atol=1e-5, rtol=0)
    frozen = {k for k in policy.state_dict() if k.startswith("backbone.") and ".lora_" not in k}
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".lora_" in n or n.startswith(("action_head.", "proprio_projector.", "scale_head.")) for n in trainable
    )
    before = snapshot(policy)
    optimizer = torch.optim.Adam(policy.rl_parameters(), lr=1e-5)  # the random tiny model is steep: 1e-4 overshoots
    stats = ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=2, minibatch_size=4))
    assert stats["initial_ratio_error"] < 1e-5
    moved = changed(before, policy)
    assert moved and not moved & frozen
    assert any(".lora_B." in k for k in moved) and any(k.startswith("action_head.") for k in moved)
    with torch.no_grad():
        new = policy.log_prob(batch.inputs, batch.actions).sum(-1)
    old = batch.old_log_prob.sum(-1)
    # the update climbs the policy-gradient objective: the advantage-weighted log-likelihood rises
    assert (batch.advantages * (new - old)).sum() > 0.5


def test_sft_fits_only_the_scale_head_by_likelihood_around_the_frozen_means():
    policy = openvla(seed=3)
    env = make_env()
    data = chunk_dataset(policy, record_demonstrations(env, make_contexts("lab_a", range(3)), expert_action))
    before = snapshot(policy)
    losses = behaviour_cloning(policy, data, SFTConfig(steps=60, batch_size=16, lr=3e-3), progress=False)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert changed(before, policy) == {k for k in before if k.startswith("scale_head.")}


def test_a_checkpoint_of_ours_holds_what_ript_trains_and_names_the_base_folder(tmp_path):
    policy = openvla(seed=4)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.1)
    policy.save(tmp_path)
    saved = set(policy.checkpoint_state())
    assert saved and all(not k.startswith("backbone.") or ".lora_" in k for k in saved)
    loaded = load_policy(tmp_path)
    assert isinstance(loaded, OpenVlaOftPolicy) and loaded.config.oft.backbone == str(tiny_openvla())
    assert_same_acts(policy, loaded, observations(2), atol=1e-5)


def copy_checkpoint(tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_openvla(), tmp_path / "ckpt"))


def rewrite_shard(folder: Path, edit) -> str:
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    tensors = load_file(str(shard))
    edit(tensors)
    save_file(tensors, str(shard))
    index = json.loads((folder / files.INDEX_FILE).read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard.name} | dict.fromkeys(
        tensors, shard.name
    )
    (folder / files.INDEX_FILE).write_text(json.dumps(index))
    return shard.name


class Executable:  # a pickle that needs more than tensors
    def __reduce__(self):
        return (print, ("this ran",))


def test_broken_checkpoints_are_refused_naming_the_file_and_the_key(tmp_path):
    folder = copy_checkpoint(tmp_path)
    (folder / "proprio_projector--100_checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match=r"exactly one proprio_projector--<step>_checkpoint\.pt, found none"):
        openvla(folder=folder)

    folder = copy_checkpoint(tmp_path / "a")
    shard = rewrite_shard(
        folder, lambda t: t.update({"vision_backbone.featurizer.blocks.0.attn.extra": torch.zeros(2)})
    )
    with pytest.raises(
        CheckpointError, match=rf"{shard}: unknown key 'vision_backbone\.featurizer\.blocks\.0\.attn\.extra'"
    ):
        openvla(folder=folder)

    folder = copy_checkpoint(tmp_path / "b")
    torch.save(
        {"fc1.weight": torch.zeros(64, 3), "bogus": torch.zeros(1)}, folder / "proprio_projector--100_checkpoint.pt"
    )
    with pytest.raises(CheckpointError, match=r"proprio_projector--100_checkpoint\.pt: unknown key 'bogus'"):
        openvla(folder=folder)

    folder = copy_checkpoint(tmp_path / "c")
    torch.save({"fc1.weight": Executable()}, folder / "proprio_projector--100_checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"proprio_projector--100_checkpoint\.pt cannot be read as plain weights"):
        openvla(folder=folder)

    folder = copy_checkpoint(tmp_path / "d")
    key = "projector.fc3.weight"
    index = json.loads((folder / files.INDEX_FILE).read_text())["weight_map"]
    shard = folder / index[key]
    tensors = load_file(str(shard))
    tensors[key] = tensors[key][:, :-1].contiguous()
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match=rf"{shard.name}: 'projector\.fc3\.weight' gives .* of shape \(64, 63\)"):
        openvla(folder=folder)

    folder = copy_checkpoint(tmp_path / "e")
    stats = json.loads((folder / "dataset_statistics.json").read_text())
    stats["other_dataset"] = next(iter(stats.values()))
    (folder / "dataset_statistics.json").write_text(json.dumps(stats))
    with pytest.raises(
        CheckpointError, match=r"holds \['other_dataset', 'tiny_dataset'\]: set policy\.openvla_oft\.unnorm_key"
    ):
        openvla(folder=folder)
    with pytest.raises(CheckpointError, match=r"has no 'libero' \(policy\.openvla_oft\.unnorm_key\)"):
        openvla(folder=folder, openvla_oft={"unnorm_key": "libero"})
    assert openvla(folder=folder, openvla_oft={"unnorm_key": "other_dataset"}).action_dim == 3


def test_a_robot_the_checkpoint_does_not_fit_is_refused_naming_both_values(tmp_path):
    config = tiny_policy(family="openvla_oft").config
    with pytest.raises(CheckpointError, match=r"takes 32x32 images \(config\.json image_sizes\), .* give 64x64"):
        OpenVlaOftPolicy(config, (64, 64), 3, 3)
    with pytest.raises(CheckpointError, match=r"takes 1 camera\(s\) \['top'\] .* the robot has 2"):
        OpenVlaOftPolicy(config, (IMAGE_SIZE, IMAGE_SIZE), 3, 3, cameras=("top", "wrist"))
    with pytest.raises(CheckpointError, match=r"the checkpoint's action has 3 dimensions .*, the robot's 7"):
        OpenVlaOftPolicy(config, (IMAGE_SIZE, IMAGE_SIZE), 3, 7)
    with pytest.raises(CheckpointError, match=r"the checkpoint's state has 3 dimensions .*, the robot's 8"):
        OpenVlaOftPolicy(config, (IMAGE_SIZE, IMAGE_SIZE), 8, 3)
    with pytest.raises(CheckpointError, match="is not a folder"):
        openvla(folder=tmp_path / "missing")


@pytest.fixture(scope="module")
def released() -> tuple[dict[str, Path], dict[str, int], dict[str, torch.Size]]:
    folder = tiny_openvla()
    where = files.shards(folder)
    shape = files.shapes(where)
    config = files.read_config(folder)
    dino, siglip = (files.tower_sizes(shape, tower, IMAGE_SIZE) for tower in files.TOWERS)
    with torch.device("meta"):
        backbone = OpenVlaBackbone(dino, siglip, config["text_config"], IMAGE_SIZE)
    return (
        where,
        {"dino": dino["depth"], "siglip": siglip["depth"]},
        {k: v.shape for k, v in backbone.state_dict().items()},
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_renamed_or_reshaped_weight_is_refused_with_the_shard_and_the_key(released, tmp_path_factory, data):
    where, depth, expected = released
    key = data.draw(st.sampled_from(sorted(k for k in where if files.map_key(k, depth))), label="key")
    mutation = data.draw(st.sampled_from(["rename", "reshape", "transpose"]), label="mutation")
    folder = tmp_path_factory.mktemp("fuzz")
    shard = folder / where[key].name
    tensors = load_file(str(where[key]))
    tensor = tensors.pop(key)
    if mutation == "rename":
        new_key = key.replace(".", data.draw(st.sampled_from([".x.", "_", ".0."])), 1)
        tensors[new_key] = tensor
    elif mutation == "reshape":
        new_key, tensors[key] = key, torch.cat([tensor, tensor[..., :1]], dim=-1)
    else:
        new_key, tensors[key] = key, tensor.reshape(-1).flip(0)[: max(1, tensor.numel() - 1)].contiguous()
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError) as error:
        files.load_vlm({k: shard for k in tensors}, depth, expected, torch.float32)
    assert shard.name in str(error.value) and f"'{new_key}'" in str(error.value)
