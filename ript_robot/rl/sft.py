"""Behaviour cloning (SFT): fit a policy's chunk distribution to demonstrations.

Every step t of a demonstration gives one sample: the observation at t and the next H
executed actions. Past the episode's end the target is padding, masked out of the loss: for
delta actions, repeating the last one would teach "keep moving" after the task ended. Steps recorded without
camera images (a slow simulator renders only some) give no sample of their own. The loss is the
policy's own `bc_loss`, for the light policy the negative log-likelihood, so the learned
scale head is fitted together with the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ript_robot.config import SFTConfig
from ript_robot.policies.base import Batch, Policy
from ript_robot.types import Episode


@dataclass
class DemoDataset:
    """Observation tensors and target chunks (N, H, A) for behaviour cloning."""

    inputs: Batch
    actions: torch.Tensor
    mask: torch.Tensor  # (N, H) 1.0 where the target action was recorded, 0.0 where it pads past the end

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def chunk_dataset(policy: Policy, episodes: Sequence[Episode]) -> DemoDataset:
    """One (observation, next H actions) sample per step of every demonstration that has camera images. A policy
    that normalizes and was never fitted is fitted on these demonstrations first (`policy.normalization`)."""
    h = policy.chunk_size
    observations, chunks, masks = [], [], []
    for episode in episodes:
        if not episode.steps:
            continue
        actions = np.stack([s.action for s in episode.steps])
        padded = np.concatenate([actions, np.repeat(actions[-1:], h - 1, axis=0)])
        for t, step in enumerate(episode.steps):
            if not step.observation.images:
                continue  # a step recorded without rendering: its actions still fill earlier samples' chunks
            observations.append(step.observation)
            chunks.append(padded[t : t + h])
            masks.append(np.arange(h) < len(actions) - t)
    if not observations:
        raise ValueError("no demonstration steps to learn from: record demonstrations first")
    if policy.needs_statistics:  # a normalizing policy's first demonstrations set its units
        steps = [s for e in episodes for s in e.steps]
        policy.fit_statistics(np.stack([s.observation.state for s in steps]), np.stack([s.action for s in steps]))
    return DemoDataset(
        policy.preprocess(observations),
        torch.from_numpy(np.stack(chunks)).float(),
        torch.from_numpy(np.stack(masks)).float(),
    )


def behaviour_cloning(
    policy: Policy,
    dataset: DemoDataset,
    config: SFTConfig,
    seed: int = 0,
    desc: str = "SFT",
    progress: bool = True,
    finetune: bool = False,
) -> list[float]:
    """Minimize the BC loss for `config.steps` minibatches per stage of the policy; returns the loss per step.

    Families trained in stages (`policy.sft_stages`, QueST's autoencoder then prior; with
    `finetune`, a pretrained policy's `finetune_stages`) run them in order, each with a fresh
    optimizer; parameters a stage's loss does not reach keep their values (their gradient
    stays None, so neither Adam nor weight decay moves them).
    """
    if config.steps == 0:
        return []
    generator = torch.Generator().manual_seed(seed)
    losses = []
    stages = policy.finetune_stages if finetune else policy.sft_stages
    device = policy.device  # the dataset stays on the CPU; each minibatch moves to where the policy is
    for stage in stages:
        optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        policy.train()
        name = desc if len(stages) == 1 else f"{desc} ({stage})"
        bar = tqdm(range(config.steps), desc=name, disable=not progress, leave=False)
        for _ in bar:
            index = torch.randint(len(dataset), (min(config.batch_size, len(dataset)),), generator=generator)
            inputs = {k: v[index].to(device) for k, v in dataset.inputs.items()}
            loss = policy.bc_loss(inputs, dataset.actions[index].to(device), stage, dataset.mask[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    return losses
