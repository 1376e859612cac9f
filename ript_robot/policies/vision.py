"""The observation encoder every light policy family shares: camera keypoints, state and instruction.

A small CNN ends in a spatial softmax (expected keypoint coordinates), which localizes
objects and generalizes across layouts from few demonstrations. Pixels enter centred on 0
(`pixel_mean`, kept in checkpoints): from all-positive [0, 1] inputs, most first-layer ReLUs
died early in training (11-14 of 16), and with them, in some seeds, all the perception the
policy could learn. The instruction, hashed into a word vocabulary and averaged, modulates
the conv features (FiLM) so keypoints follow the named object. Several cameras (LIBERO's
agent view and wrist camera) share the encoder and their keypoints are concatenated.
Families differ only in what they put on top of `features()`: the chunked policy a Gaussian
chunk head, the QueST-style policy a skill prior.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ript_robot.policies.base import Batch, ConfiguredPolicy
from ript_robot.types import Observation

VOCAB_SIZE = 1024
MAX_TOKENS = 16
WORD_DIM = 32


def tokenize(instruction: str) -> list[int]:
    """Hash lower-cased words into a fixed vocabulary (stable across processes and machines)."""
    words = instruction.lower().replace(",", " ").replace(".", " ").split()[:MAX_TOKENS]
    return [zlib.crc32(w.encode()) % (VOCAB_SIZE - 1) + 1 for w in words] or [0]


def pad_tokens(tokens: Sequence[list[int]]) -> torch.Tensor:
    """Token lists -> one (B, L) int64 tensor, padded with 0 (the EmbeddingBag's padding index)."""
    padded = np.zeros((len(tokens), max(map(len, tokens), default=1)), np.int64)
    for i, t in enumerate(tokens):
        padded[i, : len(t)] = t
    return torch.from_numpy(padded)


class SpatialSoftmax(nn.Module):
    """Feature map (B, K, H, W) -> expected (x, y) of each channel's softmax, (B, 2K) in [-1, 1]."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, k, h, w = features.shape
        attention = features.flatten(2).softmax(-1).view(b, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=features.device)
        xs = torch.linspace(-1.0, 1.0, w, device=features.device)
        x = (attention.sum(2) * xs).sum(-1)
        y = (attention.sum(3) * ys).sum(-1)
        return torch.cat([x, y], dim=1)


class VisionLanguagePolicy(ConfiguredPolicy):
    """A policy whose observation encoder is the keypoint CNN with instruction FiLM (see the module doc)."""

    def build(self) -> None:
        """The shared encoder (cameras' keypoints concatenated in the order of `cameras`), then the family's head."""
        config = self.config
        c = config.channels
        self.words = nn.EmbeddingBag(VOCAB_SIZE, WORD_DIM, mode="mean", padding_idx=0)
        self.register_buffer("pixel_mean", torch.tensor(0.5))  # in checkpoints: those of uncentred encoders refuse
        self.conv1 = nn.Conv2d(3, c, 8, stride=4, padding=2)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.film = nn.Linear(WORD_DIM, 2 * c)
        self.conv3 = nn.Conv2d(c, config.keypoints, 3, padding=1)
        self.keypoints = SpatialSoftmax()
        self.feature_dim = 2 * config.keypoints * max(1, len(self.cameras)) + self.state_dim + WORD_DIM
        self._token_cache: dict[str, list[int]] = {}
        self.build_head()

    @abstractmethod
    def build_head(self) -> None:
        """Create the family's modules on top of `features()` (sized by self.config and self.feature_dim)."""

    def preprocess(self, observations: Sequence[Observation]) -> Batch:
        images, states = self.stack_observations(observations)
        tokens = []
        for obs in observations:
            if obs.instruction not in self._token_cache:
                self._token_cache[obs.instruction] = tokenize(obs.instruction)
            tokens.append(self._token_cache[obs.instruction])
        return {"image": images, "state": states, "tokens": pad_tokens(tokens)}

    def features(self, batch: Batch) -> torch.Tensor:
        """The observation as one vector (B, feature_dim): keypoints of every camera, state, instruction."""
        b, n = batch["image"].shape[:2]  # (B, N cameras, H, W, 3): one encoder for every camera
        image = batch["image"].flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0 - self.pixel_mean
        words = self.words(batch["tokens"])
        x = F.relu(self.conv1(image))
        gamma, beta = self.film(words).repeat_interleave(n, dim=0).chunk(2, dim=-1)
        x = F.relu(self.conv2(x) * (1.0 + gamma[..., None, None]) + beta[..., None, None])
        keypoints = self.keypoints(self.conv3(x)).view(b, -1)
        return torch.cat([keypoints, batch["state"], words], dim=-1)
