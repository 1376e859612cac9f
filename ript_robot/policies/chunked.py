"""The default light policy: the keypoint encoder with a learned-scale Gaussian chunk head.

It is the CPU default for the robot and the policy the quickstart trains. On top of the
shared observation encoder (`policies.vision`: keypoints, state, instruction) an MLP
predicts the mean and a bounded scale of every action of the chunk; the log-probability of
each action is the sum of its A independent Gaussian (or Laplace) terms, each that of the
command sent (`bounded_log_prob`); SFT fits the plain density to the demonstrations.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Laplace, Normal

from ript_robot.policies.base import Batch, masked_mean
from ript_robot.policies.vision import VisionLanguagePolicy


class ChunkedPolicy(VisionLanguagePolicy):
    """Keypoint encoder + MLP predicting an (H, A) action chunk with a learned scale."""

    family = "chunked"

    def build_head(self) -> None:
        config, width = self.config, self.config.hidden_dim
        out = config.chunk_size * self.action_dim
        self.trunk = nn.Sequential(nn.Linear(self.feature_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.mean_head = nn.Linear(width, out)
        self.scale_head = nn.Linear(width, out)

    def distribution(self, batch: Batch) -> Distribution:
        """Distribution over chunks, batch shape (B, H, A)."""
        h = self.trunk(self.features(batch))
        shape = (-1, self.config.chunk_size, self.action_dim)
        mean = self.mean_head(h).view(shape)
        scale = self.bounded_scale(self.scale_head(h).view(shape))
        if self.config.distribution == "laplace":
            return Laplace(mean, scale)
        return Normal(mean, scale)

    def log_prob(
        self, batch: Batch, actions: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.command_log_prob(self.distribution(batch), self.to_policy_units(actions))

    def bc_loss(
        self, batch: Batch, actions: torch.Tensor, stage: str = "policy", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        dist = self.distribution(batch)
        return -masked_mean(dist.log_prob(self.to_policy_units(actions)).sum(dim=-1), mask) / self.action_dim

    def sample(self, batch: Batch, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.distribution(batch)
        actions = dist.mean if deterministic else dist.sample()
        return actions, self.command_log_prob(dist, actions)
