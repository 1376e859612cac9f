"""GPU evidence in one run: a 7B VLA's act() and PPO update, LIBERO rendering through EGL, on the lent machine.

`run.sh` beside this file calls it (`run.sh --smoke` on a CPU, in CI). Four parts, each its own
key in benchmarks/results/gpu.json; a part that cannot run on the machine records why instead:
- `openvla_oft_7b`: a random checkpoint in the released OpenVLA-OFT layout at the released 7B
  shapes (DINOv2 ViT-L/14 + SigLIP so400m/14, Llama-2-7B; written here, nothing downloaded),
  loaded by the openvla_oft family in bfloat16 with LoRA rank 32: act() at batch 1 (two 224x224
  cameras, chunks of 8 x 7), seconds per PPO update on one group of K=8 episodes of 30 chunks,
  peak GPU memory;
- `libero_egl`: LIBERO stepped in 1, 4 and 8 worker processes with two 128x128 cameras rendered
  at every step through EGL on the GPU (MUJOCO_GL=egl), steps per second of all workers together;
- `store_trainer`: the store trainer's update (`batch_for` + `ppo_update`, what `StoreTrainer._update`
  times as update_s) with the main job's chunked policy and RIPT settings on one iteration's groups of
  built-in-task rollouts, with `trainer.device` cuda against cpu: seconds per update on each, their ratio,
  and how far the two devices' weights are apart after the same first update (float rounding only).
- `sft_and_ript`: the in-process job's path (`ript quickstart trainer.device=cuda`): milliseconds per SFT
  step of the main job's policy on 32 demonstrations, one RIPT iteration (its groups' labels alternated so
  that it updates), each on cuda against cpu, and whether the checkpoint it saves reloads on the CPU bit for bit.

    benchmarks/device/run.sh [--smoke]        # --smoke: tiny sizes, seconds, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ript_robot.types import Episode

RESULTS = Path(__file__).resolve().parents[1] / "results"
K, CHUNKS_PER_EPISODE = 8, 30


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def openvla_oft_7b(smoke: bool, device: torch.device, work: Path) -> dict:
    """act() latency at batch 1, one PPO update on a group of K episodes, peak memory (see the module doc)."""
    from ript_robot.config import OftConfig, OpenVlaOftConfig, PolicyConfig, RIPTConfig
    from ript_robot.envs.base import EnvSpec
    from ript_robot.policies import make_policy
    from ript_robot.policies.tiny_openvla import RELEASED_7B, Sizes, save_tiny_openvla_oft
    from ript_robot.rl.ppo import RolloutBatch, ppo_update
    from ript_robot.types import Observation

    side, sizes = (32, Sizes()) if smoke else (224, RELEASED_7B)
    started = time.perf_counter()
    folder = save_tiny_openvla_oft(work / "openvla_7b", image_size=side, state_dim=8, action_dim=7, sizes=sizes)
    written_s = time.perf_counter() - started
    cameras = {"agentview": (side, side), "wrist": (side, side)}
    spec = EnvSpec(cameras=cameras, state_dim=8, action_dim=7, control_hz=20.0, max_steps=300)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    oft = OftConfig(backbone=str(folder), device=str(device), dtype=dtype, lora_rank=32, lora_alpha=32)
    config = PolicyConfig(family="openvla_oft", chunk_size=8, oft=oft, openvla_oft=OpenVlaOftConfig())
    started = time.perf_counter()
    policy = make_policy(config, spec)
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(0)

    def observation() -> Observation:
        images = {c: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for c in spec.cameras}
        return Observation(images, rng.normal(size=8).astype(np.float32), "put the black bowl on the plate")

    one = [observation()]
    for _ in range(3):
        policy.act(one)
    times = []
    for _ in range(3 if smoke else 20):
        synchronize(device)
        t0 = time.perf_counter()
        policy.act(one)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    chunks_per_episode = 2 if smoke else CHUNKS_PER_EPISODE
    observations = [observation() for _ in range(K * chunks_per_episode)]
    chunks = [c for i in range(0, len(observations), 16) for c in policy.act(observations[i : i + 16])]
    returns = np.repeat(rng.permutation([1.0] * (K // 2) + [0.0] * (K // 2)), chunks_per_episode)
    batch = RolloutBatch(
        policy.preprocess(observations),
        torch.from_numpy(np.stack([c.actions for c in chunks])),
        torch.from_numpy(np.stack([c.step_log_prob for c in chunks])),
        torch.from_numpy(returns - returns.mean()).float(),
        torch.ones(len(chunks), policy.chunk_size),
    )
    optimizer = torch.optim.Adam(policy.rl_parameters(), lr=1e-5)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    t0 = time.perf_counter()
    stats = ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=1, minibatch_size=16))
    synchronize(device)
    update_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "shapes": "tiny (smoke)" if smoke else "released 7B: DINOv2 ViT-L/14 + SigLIP so400m/14, Llama-2-7B",
        "dtype": dtype,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable_parameters": sum(p.numel() for p in policy.rl_parameters()),
        "checkpoint_written_s": written_s,
        "load_s": load_s,
        "act_batch_1_p50_ms": float(np.median(times) * 1e3),
        "act_batch_1_p99_ms": float(np.percentile(times, 99) * 1e3),
        "ppo_update_k8_s": update_s,
        "ppo_samples": len(chunks),
        "initial_ratio_error": float(stats["initial_ratio_error"]),
        "peak_gpu_memory_gb": peak,
    }


def libero_egl(smoke: bool, device: torch.device, work: Path) -> dict:
    """Steps per second of LIBERO in worker processes, two 128x128 cameras rendered every step."""
    if device.type == "cuda":
        os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = "egl"
    from functools import partial

    from sim_bridge.libero_env import LiberoEnv, libero_contexts
    from sim_bridge.workers import WorkerEnv

    steps = 8 if smoke else 200
    make = partial(LiberoEnv, "libero_spatial", image_size=128, max_steps=steps + 1)
    out: dict[str, float] = {}
    for n in (1,) if smoke else (1, 4, 8):
        envs = [WorkerEnv(make, f"egl-{i}") for i in range(n)]
        try:
            for i, env in enumerate(envs):
                env.reset(libero_contexts("libero_spatial", [0], [i])[0])
            rng = np.random.default_rng(0)
            t0 = time.perf_counter()
            for _ in range(steps):
                for env in envs:
                    env.step_async(rng.uniform(-0.3, 0.3, 7), render=True)
                for env in envs:
                    env.step_wait()
            out[f"workers_{n}_steps_s"] = n * steps / (time.perf_counter() - t0)
        finally:
            for env in envs:
                env.close()
    out["mujoco_gl"] = f"{os.environ.get('MUJOCO_GL', 'default')} on the {device.type}"
    return out


def alternate_labels(episodes: list[Episode]) -> list[Episode]:
    """Label the episodes failure, success, failure, ... so that every group of an even K carries signal."""
    from ript_robot.types import Label

    for i, episode in enumerate(episodes):
        episode.meta.label = Label(bool(i % 2), "sim")
    return episodes


def store_trainer(smoke: bool, device: torch.device, work: Path) -> dict:
    """Seconds per store-trainer update on `device` against the CPU, and their weights' agreement (module doc).

    The groups are rollouts of the main job's freshly built policy on the built-in task, its gripper held open
    so that every episode runs to the step limit (the largest batch an iteration can give), with their labels
    alternated within each group so every group carries signal, as the groups the trainer accepts do."""
    import copy

    from ript_robot.config import QuickstartConfig, TrainerConfig
    from ript_robot.data import EpisodeStore
    from ript_robot.envs.pick import PickEnv, make_contexts
    from ript_robot.policies import make_policy
    from ript_robot.rl.ppo import batch_for, ppo_update
    from ript_robot.rl.sampling import Group
    from ript_robot.train.service import StoreTrainer
    from sim_bridge.rollouts import builtin_rollouts

    cfg = QuickstartConfig()
    ript = cfg.ript.model_copy(update={"groups_per_iteration": 2, "ppo_epochs": 1} if smoke else {})
    k = ript.rollouts_per_context
    torch.manual_seed(0)
    policy = make_policy(cfg.policy, PickEnv(cfg.task.image_size, cfg.task.max_steps).spec)
    with torch.no_grad():  # grip (the last action dimension) > 0 closes, which ends an episode
        policy.mean_head.bias.view(cfg.policy.chunk_size, -1)[:, -1] = -3.0
    contexts = make_contexts(cfg.task.target_scene, range(ript.groups_per_iteration))[: ript.groups_per_iteration]
    sim = builtin_rollouts(cfg)
    episodes = sim(policy, [c for c in contexts for _ in range(k)])
    sim.close()
    alternate_labels(episodes)
    groups = [Group(c, episodes[i * k : (i + 1) * k]) for i, c in enumerate(contexts)]
    devices = ["cpu"] + ([str(device)] if device.type == "cuda" else [])
    out: dict[str, Any] = {"groups": len(groups), "episodes": len(episodes), "ppo_epochs": ript.ppo_epochs}
    weights = {}
    for name in devices:
        trainer = StoreTrainer(EpisodeStore(work / f"store-{name}"), contexts, ript, TrainerConfig(device=name))
        trainer.start(copy.deepcopy(policy))
        assert trainer.policy is not None and trainer.optimizer is not None
        times = []
        for update in range(2 if smoke else 4):  # the first one warms up the device (kernels, allocator)
            synchronize(trainer.policy.device)
            t0 = time.perf_counter()
            batch = batch_for(trainer.policy, groups, ript)
            assert batch is not None, "every group carries signal"
            stats = ppo_update(trainer.policy, trainer.optimizer, batch, ript, trainer.generator)
            synchronize(trainer.policy.device)
            times.append(time.perf_counter() - t0)
            if update == 0:
                weights[name] = {k: v.detach().cpu() for k, v in trainer.policy.state_dict().items()}
        out[f"{name.split(':')[0]}_update_s"] = float(np.median(times[1:]))
        out["samples"] = int(stats["samples"])
    if len(devices) > 1:
        out["cuda_speedup"] = out["cpu_update_s"] / out["cuda_update_s"]
        cpu, gpu = weights["cpu"], weights[devices[1]]
        out["first_update_max_weight_difference"] = max(float((cpu[k] - gpu[k]).abs().max()) for k in cpu)
    return out


def sft_and_ript(smoke: bool, device: torch.device, work: Path) -> dict:
    """The in-process job's path with `trainer.device` (module doc): SFT steps and one RIPT iteration of the
    main job's policy on `device` against the CPU, and whether what it saves reloads on the CPU."""
    from ript_robot.config import QuickstartConfig
    from ript_robot.envs.demos import record_demonstrations
    from ript_robot.envs.pick import PickEnv, expert_action, make_contexts
    from ript_robot.policies import load_policy, make_policy
    from ript_robot.policies.base import Policy
    from ript_robot.rl.sampling import context_pool
    from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
    from ript_robot.train.ript import RIPTLearner
    from ript_robot.types import Context
    from sim_bridge.rollouts import SimRollouts, builtin_rollouts

    def labeled(sim: SimRollouts, policy: Policy, contexts: list[Context]) -> list[Episode]:
        return alternate_labels(sim(policy, contexts))  # every group carries signal, so the iteration updates

    cfg = QuickstartConfig()
    steps = 20 if smoke else cfg.sft.steps
    ript = cfg.ript.model_copy(update={"groups_per_iteration": 2, "ppo_epochs": 1} if smoke else {})
    env = PickEnv(cfg.task.image_size, cfg.task.max_steps)
    demos = record_demonstrations(env, make_contexts(cfg.task.target_scene, range(8)), expert_action)
    contexts = make_contexts(cfg.task.target_scene, range(100, 100 + ript.groups_per_iteration))
    out: dict[str, Any] = {"sft_steps": steps, "demos": len(demos)}
    for name in ["cpu"] + ([str(device)] if device.type == "cuda" else []):
        torch.manual_seed(0)
        policy = make_policy(cfg.policy, env.spec)
        policy.place(name, "trainer.device")
        dataset = chunk_dataset(policy, demos)
        started = time.perf_counter()
        behaviour_cloning(policy, dataset, cfg.sft.model_copy(update={"steps": steps}), progress=False)
        synchronize(policy.device)
        key = name.split(":")[0]
        out[f"{key}_sft_step_ms"] = 1000 * (time.perf_counter() - started) / steps
        sim = builtin_rollouts(cfg)
        learner = RIPTLearner(policy, context_pool(contexts, ript, 0), ript, 0)
        started = time.perf_counter()
        metrics = learner.step(partial(labeled, sim, policy))
        synchronize(policy.device)
        sim.close()
        out[f"{key}_ript_iteration_s"] = time.perf_counter() - started
        out[f"{key}_ript_episodes"] = learner.episodes
        out[f"{key}_ript_updated"] = bool(metrics["updated"])
        out[f"{key}_approx_kl"] = metrics.get("approx_kl")
        reloaded = load_policy(policy.save(work / f"sft_and_ript-{key}"))
        pairs = zip(policy.state_dict().values(), reloaded.state_dict().values(), strict=True)
        out[f"{key}_reloads_on_cpu"] = reloaded.device.type == "cpu" and all(torch.equal(a.cpu(), b) for a, b in pairs)
    if device.type == "cuda":
        out["cuda_sft_speedup"] = out["cpu_sft_step_ms"] / out["cuda_sft_step_ms"]
    return out


def attempt(name: str, part: Callable[[bool, torch.device, Path], dict], smoke: bool, *args) -> dict:
    """A part's figures, or on the lent machine why it did not run (the rest still runs); a smoke run fails
    instead, so that CI notices a part that no longer runs."""
    print(f"== {name}", flush=True)
    started = time.perf_counter()
    try:
        result = part(smoke, *args)
    except Exception as exc:
        if smoke:
            raise
        traceback.print_exc()
        result = {"skipped": f"{type(exc).__name__}: {exc}"}
    result["wall_s"] = time.perf_counter() - started
    print(json.dumps(result, indent=2), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds, writes nothing")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json", help="where the figures go")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="gpu_evidence_"))
    result = {
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor()})",
        "torch": torch.__version__,
        "smoke": args.smoke,
        "openvla_oft_7b": attempt("openvla_oft_7b", openvla_oft_7b, args.smoke, device, work),
        "libero_egl": attempt("libero_egl", libero_egl, args.smoke, device, work),
        "store_trainer": attempt("store_trainer", store_trainer, args.smoke, device, work),
        "sft_and_ript": attempt("sft_and_ript", sft_and_ript, args.smoke, device, work),
    }
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("gpu evidence:", "smoke run ok" if args.smoke else f"written to {args.out}")


if __name__ == "__main__":
    main()
