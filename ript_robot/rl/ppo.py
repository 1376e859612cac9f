"""The PPO clipped-ratio update of RIPT: no critic, no reference model, no KL penalty.

Every action a chunk executed is one sample, as every token is in an LLM's GRPO: its
advantage is its episode's leave-one-out advantage, its old log-probability the one `act()`
reported when the chunk was sampled. Both score the command the arm received: an action
the safety filter clipped to the policy's action bounds is scored by the probability mass
beyond the bound (`policies.base.bounded_log_prob`), so it is credited. Masked out: actions
of a chunk left unexecuted (the episode ended mid-chunk, or the next chunk took over) and
actions the filter changed otherwise (rate, step, workspace or keep-out limits, bounds
narrower than the policy's), since raising the likelihood of a command the arm never
received would credit the wrong action (token policies: the whole token). The loss reads
like the paper:

    ratio    = exp(new_log_prob - old_log_prob)
    pg_loss1 = -advantage * ratio
    pg_loss2 = -advantage * clip(ratio, 1 - clip_low, 1 + clip_high)
    loss     = mean over credited log-probs of max(pg_loss1, pg_loss2)
    loss    += imitation_coef * bc_loss     # optional: -log-likelihood of imitated actions

with separate lower and upper clip ranges (a larger upper range lets rare successes grow).
The behaviour-cloning term (`Imitation`) fits actions worth copying outright: what a person
commanded when they took over (HG-DAgger; those steps never enter the ratio), and, with
`ript.imitate_successes`, the executed actions of successful rollouts (self-imitation).
A ratio per action rather than per chunk keeps it near 1: a chunk's ratio is the product
of H x A per-dimension ratios and would be clipped almost always.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ript_robot.config import RIPTConfig
from ript_robot.policies.base import Batch, Policy
from ript_robot.rl.advantage import leave_one_out_advantage
from ript_robot.rl.distributed import all_reduce, data_parallel, is_sharded
from ript_robot.rl.sampling import Group
from ript_robot.types import Episode, Observation

S = TypeVar("S", "RolloutBatch", "Imitation")


@dataclass
class Imitation:
    """Chunks the behaviour-cloning term fits: their observations, the actions to copy and which of them count."""

    inputs: Batch
    actions: torch.Tensor  # (M, H, A)
    mask: torch.Tensor  # (M, H) 1.0 where an action is imitated

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def select(self, index: torch.Tensor) -> Imitation:
        return Imitation({k: v[index] for k, v in self.inputs.items()}, self.actions[index], self.mask[index])

    def to(self, device: torch.device) -> Imitation:
        inputs = {k: v.to(device) for k, v in self.inputs.items()}
        return Imitation(inputs, self.actions.to(device), self.mask.to(device))


@dataclass
class RolloutBatch:
    """Chunk-level samples for the PPO update."""

    inputs: Batch
    actions: torch.Tensor  # (N, H, A) as sampled
    old_log_prob: torch.Tensor  # (N, H) per action, as reported by act()
    advantages: torch.Tensor  # (N,)
    mask: torch.Tensor  # (N, H) 1.0 where a log-prob is credited: executed, not limited
    weight: torch.Tensor | None = None  # (N,) each chunk's share in the loss's weighted mean (None: 1.0 each)
    executed_actions: int = 0  # actions the episodes executed
    clipped_actions: int = 0  # of those, changed by the safety filter
    limited_actions: int = 0  # of those, changed beyond the policy's bounds (never credited)
    imitation: Imitation | None = None  # what the behaviour-cloning term fits (None: nothing)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # (N, ...) each chunk's re-scoring extras
    intervened_steps: int = 0  # steps a person commanded in the episodes imitation drew on

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def select(self, index: torch.Tensor) -> RolloutBatch:
        return RolloutBatch(
            {k: v[index] for k, v in self.inputs.items()},
            self.actions[index],
            self.old_log_prob[index],
            self.advantages[index],
            self.mask[index],
            None if self.weight is None else self.weight[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )

    def to(self, device: torch.device) -> RolloutBatch:
        """The same samples with every tensor on `device` (the policy's, for the update); counts unchanged."""
        return dataclasses.replace(
            self,
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            actions=self.actions.to(device),
            old_log_prob=self.old_log_prob.to(device),
            advantages=self.advantages.to(device),
            mask=self.mask.to(device),
            weight=None if self.weight is None else self.weight.to(device),
            imitation=None if self.imitation is None else self.imitation.to(device),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )

    def loss_mask(self) -> torch.Tensor:
        """(N, H) the credited log-probs, each with its weight in the loss's mean."""
        return self.mask if self.weight is None else self.mask * self.weight[:, None]


def credited(executed: int, limited: np.ndarray, span: int) -> np.ndarray:
    """Which of a chunk's H log-prob positions PPO credits: (H,) bool.

    executed: how many of its actions ran (a prefix); limited: (H,) bool, actions the safety filter
    changed beyond the policy's bounds; span: actions one log-prob covers (1, or a token's actions
    for token policies, whose log-prob sits on the span's first action). A span is credited when its
    first action ran and none of its executed actions was limited: the likelihood of an action never
    sent is not raised.
    """
    h = len(limited)
    ran = np.arange(h) < executed
    changed = (limited & ran).reshape(-1, span).any(axis=1)
    out = np.zeros(h, bool)
    out[::span] = ran[::span] & ~changed
    return out


def policy_steps(episode: Episode, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk of `episode`: how many of its actions ran (a prefix; a person's steps never count), (C,), and
    which of those the safety filter changed beyond the policy's bounds, (C, H) bool."""
    own = [s for s in episode.steps if not s.intervened]
    executed = np.bincount([s.chunk_index for s in own], minlength=len(episode.chunks))
    limited = np.zeros((len(episode.chunks), h), bool)
    first: dict[int, int] = {}
    for s in own:
        limited[s.chunk_index, s.step - first.setdefault(s.chunk_index, s.step)] = s.safety_limited
    return executed, limited


def intervened_chunks(episode: Episode, h: int) -> list[tuple[Observation, np.ndarray, np.ndarray]]:
    """What a person commanded, as chunks to imitate (HG-DAgger): from each intervened step that kept its
    frames, that step's observation, the next H commands of the same takeover, and which of them exist."""
    out = []
    steps = episode.steps
    for i, step in enumerate(steps):
        if not step.intervened or not step.observation.images:
            continue
        run = []
        for later in steps[i : i + h]:
            if not later.intervened:
                break
            run.append(later.action)
        actions = np.zeros((h, len(step.action)), np.float32)
        actions[: len(run)] = run
        out.append((step.observation, actions, np.arange(h) < len(run)))
    return out


def build_batch(
    policy: Policy,
    groups: Sequence[Group],
    weighting: str = "action",
    imitate_successes: bool = False,
    corrections: Sequence[Episode] = (),
) -> RolloutBatch | None:
    """Flatten groups into chunk samples with leave-one-out advantages; None if nothing to learn from.

    Unlabeled episodes are skipped (they get no advantage and are not in any baseline), and
    so are episodes whose advantage is exactly zero, which would add nothing to the loss.
    Actions the safety filter changed beyond the policy's bounds are masked out (`credited`), and
    so are a person's steps: only the policy's own steps of an episode are its samples. An episode a
    person took over counts as a failure in its group's baseline (`EpisodeMeta.reward_of`): the rescue
    says the policy would not have succeeded alone, so the steps that led there get its advantage.
    weighting: "action", every credited action counts alike in the loss's mean (GRPO's token mean), or
    "episode", every episode alike (a 50-step timeout no longer outweighs a 12-step success fourfold).
    imitate_successes: the executed, unlimited actions of successful episodes go to `imitation`.
    corrections: episodes whose intervened steps go to `imitation` (dynamic sampling keeps every group with
    one when imitating: a rescue teaches even when its whole group failed).
    """
    if weighting not in ("action", "episode"):
        raise ValueError(f"loss weighting must be 'action' or 'episode', got {weighting!r}")
    observations, actions, old_log_prob, advantages, masks, weights = [], [], [], [], [], []
    extras: dict[str, list[np.ndarray]] = {}
    h, span = policy.chunk_size, policy.log_prob_span
    executed_actions = clipped_actions = limited_actions = 0
    imitated = [chunk for episode in corrections for chunk in intervened_chunks(episode, h)]
    for group in groups:
        for episode, advantage in zip(group.episodes, leave_one_out_advantage(group.rewards), strict=True):
            if episode.reward is None or (advantage == 0.0 and not imitate_successes):
                continue
            executed, limited = policy_steps(episode, h)
            if imitate_successes and episode.reward == 1.0:
                for chunk, obs, n, lim in zip(
                    episode.chunks, episode.chunk_observations, executed, limited, strict=True
                ):
                    imitated.append((obs, chunk.actions, (np.arange(h) < n) & ~lim))
            if advantage == 0.0:
                continue
            clipped_actions += sum(s.safety_clipped for s in episode.steps if not s.intervened)
            executed_actions += int(executed.sum())
            limited_actions += int(limited.sum())
            first_chunk = len(masks)
            for c, (chunk, obs, n) in enumerate(zip(episode.chunks, episode.chunk_observations, executed, strict=True)):
                observations.append(obs)
                actions.append(chunk.actions)
                old_log_prob.append(chunk.step_log_prob)
                for name, value in chunk.extras.items():
                    extras.setdefault(name, []).append(value)
                advantages.append(advantage)
                masks.append(credited(int(n), limited[c], span))
            share = 1.0 / max(1, sum(int(m.sum()) for m in masks[first_chunk:])) if weighting == "episode" else 1.0
            weights += [share] * (len(masks) - first_chunk)
    if not observations and not imitated:
        return None
    a = policy.action_dim
    return RolloutBatch(
        inputs=policy.preprocess(observations) if observations else {},
        actions=torch.from_numpy(np.stack(actions)).float() if actions else torch.zeros(0, h, a),
        old_log_prob=torch.from_numpy(np.stack(old_log_prob)).float() if actions else torch.zeros(0, h),
        advantages=torch.tensor(advantages, dtype=torch.float32),
        mask=torch.from_numpy(np.stack(masks)).float() if masks else torch.zeros(0, h),
        weight=None if weighting == "action" else torch.tensor(weights, dtype=torch.float32),
        executed_actions=executed_actions,
        clipped_actions=clipped_actions,
        limited_actions=limited_actions,
        imitation=Imitation(
            policy.preprocess([obs for obs, _, _ in imitated]),
            torch.from_numpy(np.stack([a for _, a, _ in imitated])).float(),
            torch.from_numpy(np.stack([m for _, _, m in imitated])).float(),
        )
        if imitated
        else None,
        intervened_steps=sum(e.meta.intervened_steps for e in corrections),
        extras={name: torch.from_numpy(np.stack(values)).float() for name, values in extras.items()},
    )


def batch_for(policy: Policy, groups: Sequence[Group], config: RIPTConfig) -> RolloutBatch | None:
    """`build_batch` as `config` asks: its loss weighting, and, when the behaviour-cloning term has a weight,
    what it imitates (a person's corrections in the groups; successes too if asked)."""
    imitating = config.imitation_coef > 0
    corrections = [e for g in groups for e in g.episodes if e.meta.interventions] if imitating else []
    return build_batch(policy, groups, config.loss_weighting, config.imitate_successes and imitating, corrections)


def ppo_loss(
    new_log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate loss over executed actions (N, H) and its diagnostics.

    advantages (N,) broadcast over each chunk's actions; mask (N, H) selects executed ones.
    Diagnostics: approx_kl (the k3 estimator, >= 0), clipfrac, ratio_mean. Loss and
    diagnostics are sums over executed actions divided by `tokens` (default: their count
    here; data-parallel ranks pass the whole minibatch's count, so their parts add up).
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    adv = advantages[:, None]
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    tokens = (float(mask.sum()) or 1.0) if tokens is None else tokens
    loss = (torch.max(pg_loss1, pg_loss2) * mask).sum() / tokens
    with torch.no_grad():
        approx_kl = ((((ratio - 1.0) - log_ratio) * mask).sum() / tokens).item()
        clipped = (ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)
        clipfrac = ((clipped.float() * mask).sum() / tokens).item()
        ratio_mean = ((ratio * mask).sum() / tokens).item()
    return loss, {"approx_kl": approx_kl, "clipfrac": clipfrac, "ratio_mean": ratio_mean}


def ppo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    config: RIPTConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Several epochs of minibatch PPO on one batch; returns averaged diagnostics.

    With `config.target_kl` set, the update ends after the first minibatch whose approx_kl
    exceeds it (CleanRL's early stop, per minibatch): `minibatches` says how many ran.
    `initial_ratio_error` is max |ratio - 1| before any step. On-policy (every rollout ran the
    version being updated) it must be ~0: a check on the log-prob bookkeeping. With stale
    rollouts (`trainer.max_staleness` >= 1) it is the largest importance ratio between the
    current policy and the older one that sampled, which the clip then bounds.
    `clipped_share` is the share of executed actions the safety filter changed; `limited_share` the
    share it changed beyond the policy's bounds (never credited; the rest are scored censored).

    Data-parallel: inside a torch.distributed process group (torchrun; gloo on CPU, NCCL on
    GPUs) every rank holds the same batch, parameters and generator seed, scores only its
    share of each minibatch, and the gradients are summed across ranks before the step, so
    the update equals one process's on the whole minibatch (up to float rounding). A policy
    sharded with FSDP (`rl.distributed.shard`) gets its gradients reduce-scattered by FSDP instead.
    """
    rank, world = data_parallel()
    sharded = is_sharded(policy)
    parameters = policy.rl_parameters()
    policy.train()
    batch = batch.to(policy.device)  # the samples are built on the CPU; the update runs where the weights are

    def share_of(data: S, index: torch.Tensor) -> tuple[S, float]:
        """This rank's share of `index`, and 1.0; an empty share is 0.0, scored on a stand-in sample when
        sharded (every rank must run each forward and backward: they gather the weights together)."""
        mine = index[rank::world]
        if len(mine) or not sharded:
            return data.select(mine), 1.0
        return data.select(index[:1]), 0.0

    imitation = batch.imitation if config.imitation_coef > 0 else None

    def imitation_loss() -> torch.Tensor:
        """The behaviour-cloning term on a random minibatch of imitated chunks: this rank's part of its mean."""
        assert imitation is not None
        index = torch.randperm(len(imitation), generator=generator)[: config.minibatch_size]
        total = float(imitation.mask[index].sum()) or 1.0
        mine, weight = share_of(imitation, index)
        share = float(mine.mask.sum()) / total * weight
        return policy.bc_loss(mine.inputs, mine.actions, mask=mine.mask) * share

    with torch.no_grad():
        mine, weight = share_of(batch, torch.arange(len(batch)))
        error = torch.zeros(())
        if len(mine):
            start = policy.log_prob(mine.inputs, mine.actions, mine.extras)
            error = ((start - mine.old_log_prob).exp().sub(1.0).abs() * mine.mask).max() * weight
        initial_ratio_error = all_reduce(error.reshape(1), dist.ReduceOp.MAX).item()
    loss_mask = batch.loss_mask()  # weighted: each minibatch's loss is a weighted mean over its credited log-probs
    sums: dict[str, float] = defaultdict(float)
    steps = 0
    stopped = False
    # minibatches per epoch: over the PPO samples, or over the imitated chunks when there are none (an update
    # from a person's corrections alone, every group of it uniform)
    rows = len(batch) or (len(imitation) if imitation is not None else 0)
    for _ in range(config.ppo_epochs):
        if stopped:
            break
        order = torch.randperm(len(batch), generator=generator)
        for begin in range(0, rows, config.minibatch_size):
            loss, diag = torch.zeros(()), {}
            if len(batch):
                minibatch = order[begin : begin + config.minibatch_size]
                tokens = float(loss_mask[minibatch].sum()) or 1.0
                mb, weight = share_of(batch, minibatch)
                loss, diag = ppo_loss(
                    policy.log_prob(mb.inputs, mb.actions, mb.extras),
                    mb.old_log_prob,
                    mb.advantages,
                    mb.loss_mask(),
                    config.clip_low,
                    config.clip_high,
                    tokens,
                )
                loss, diag = loss * weight, {k: v * weight for k, v in diag.items()}
            if imitation is not None:
                bc_loss = imitation_loss()
                diag["bc_loss"] = bc_loss.item()
                loss = loss + config.imitation_coef * bc_loss
            optimizer.zero_grad(set_to_none=True)
            (loss * world if sharded else loss).backward()  # FSDP averages the ranks' gradients: undo it
            if world > 1 and not sharded:
                for p in parameters:
                    if p.grad is None:  # a rank with an empty share: it adds nothing
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
            if world > 1:
                summed = all_reduce(torch.tensor([loss.item(), *diag.values()], dtype=torch.float64))
                loss_value, diag = summed[0].item(), dict(zip(diag, summed[1:].tolist(), strict=True))
            else:
                loss_value = loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            if hasattr(grad_norm, "full_tensor"):  # sharded gradients give a distributed tensor
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            for key, value in diag.items():
                sums[key] += value
            sums["loss"] += loss_value
            sums["grad_norm"] += float(grad_norm)
            steps += 1
            if config.target_kl is not None and diag.get("approx_kl", 0.0) > config.target_kl:
                stopped = True
                break
    out = {key: value / max(steps, 1) for key, value in sums.items()}
    out["initial_ratio_error"] = initial_ratio_error
    out["samples"] = float(len(batch))
    out["clipped_share"] = batch.clipped_actions / max(batch.executed_actions, 1)
    out["limited_share"] = batch.limited_actions / max(batch.executed_actions, 1)
    out["minibatches"] = float(steps)
    out["imitated_actions"] = float(imitation.mask.sum()) if imitation is not None else 0.0
    out["intervened_steps"] = float(batch.intervened_steps) if imitation is not None else 0.0
    return out
