"""The flow family: a flow-matching action expert whose denoising chain has an exact log-probability.

pi0, SmolVLA and GR00T decode actions by integrating a learned velocity field from Gaussian noise: a
deterministic ODE, with no density for the actions, so RIPT's PPO ratio cannot be formed. Flow-Noise
(piRL, arXiv 2510.25889) makes every Euler step a Gaussian transition whose standard deviation a noise
head gives:

    x_0 ~ N(0, I)
    x_{k+1} = x_k + v(x_k, t_k | obs) / N + sigma(x_k, t_k | obs) * eps_k,     t_k = k / N
    log p(chain) = log N(x_0; 0, I) + sum_k log N(x_{k+1}; x_k + v / N, sigma^2)

The chunk executed is x_N. The chain x_0 .. x_N travels with it (`ActionChunk.extras["chain"]`, stored as
`chunk_extras/chain`), and `log_prob` re-scores exactly that chain under the current parameters. Per
action, the log-probability sums the Gaussian terms of that action's dimensions over the steps, so the
chunk's total is the chain's. SFT fits the velocity with the conditional flow-matching loss (straight paths
from noise to the demonstration); the noise head is RIPT's alone, starting at its scale floor
(`policy.min_std`). Deterministic evaluation integrates the ODE from x_0 = 0 without noise.

Flow-Noise rather than Flow-SDE: the exploration noise is a parameter RIPT trains (wider or narrower where
the returns say), and re-scoring needs nothing but the stored chain. The chain is in the policy's units
(normalized, with `policy.normalization`); the command the arm receives is x_N in robot units.

Two conditioners share the chain (`FlowChain`): `FlowPolicy` (family `flow`) on the light keypoint
encoder, and `FlowVlmPolicy` (family `flow_vlm`) on the hidden states of the `oft` family's action
placeholders: a transformers VLM with LoRA reads the cameras, the prompt and the proprioception, and
the flow heads denoise each action from its placeholder's state (pi0's action expert reads the VLM
prefix the same way).
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import nn
from torch.distributions import Normal

from ript_robot.policies.base import Batch, ConfiguredPolicy, masked_mean
from ript_robot.policies.oft import OftPolicy
from ript_robot.policies.vision import VisionLanguagePolicy

CHAIN = "chain"  # the name of the stored chain among a chunk's extras
CHAIN_TOLERANCE = 1e-3  # largest |x_N - action| (policy units) for a chain to be the one these actions ended


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of flow times t (B,) in [0, 1]."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, dtype=t.dtype, device=t.device) * (-math.log(1000.0) / max(half, 1)))
    angles = t[:, None] * 1000.0 * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def head(inputs: int, width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, outputs)
    )


def quiet(noise: nn.Sequential) -> None:
    """Start a noise head at its floor: sigmoid(-4) = 0.02 of the way from min_std to max_std."""
    nn.init.zeros_(noise[-1].weight)
    nn.init.constant_(noise[-1].bias, -4.0)


class FlowChain(ConfiguredPolicy):
    """The Flow-Noise chain over (H, A) chunks (see the module docstring), given a conditioner's two heads."""

    @abstractmethod
    def flow_condition(self, batch: Batch) -> torch.Tensor:
        """What the heads read of the observation (computed once per chunk)."""

    @abstractmethod
    def flow_heads(
        self, condition: torch.Tensor, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity and noise scale (B, H, A) at chain states x (B, H, A) and flow times t (B,)."""

    @property
    def steps(self) -> int:
        return self.config.flow.steps

    def _chain_log_prob(self, condition: torch.Tensor, chain: torch.Tensor) -> torch.Tensor:
        """Per-action log-probability (B, H) of chains (B, N + 1, H, A) under the current parameters."""
        total = Normal(0.0, 1.0).log_prob(chain[:, 0]).sum(-1)
        for k in range(self.steps):
            t = torch.full((len(chain),), k / self.steps, dtype=chain.dtype, device=chain.device)
            velocity, scale = self.flow_heads(condition, chain[:, k], t)
            total = total + Normal(chain[:, k] + velocity / self.steps, scale).log_prob(chain[:, k + 1]).sum(-1)
        return total

    def sample_chunks(
        self, batch: Batch, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        condition = self.flow_condition(batch)
        b, device = condition.shape[0], condition.device
        shape = (b, self.config.chunk_size, self.action_dim)
        x = torch.zeros(shape, device=device) if deterministic else torch.randn(shape, device=device)
        chain = [x]
        for k in range(self.steps):
            velocity, scale = self.flow_heads(condition, x, torch.full((b,), k / self.steps, device=device))
            mean = x + velocity / self.steps
            x = mean if deterministic else mean + scale * torch.randn_like(mean)
            chain.append(x)
        stacked = torch.stack(chain, dim=1)
        return x, self._chain_log_prob(condition, stacked), {CHAIN: stacked}

    def sample(self, batch: Batch, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        actions, log_prob, _ = self.sample_chunks(batch, deterministic)
        return actions, log_prob

    def log_prob(
        self, batch: Batch, actions: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """See `Policy.log_prob`: the chain's, re-scored from `extras["chain"]`, which must end in `actions`."""
        chain = None if extras is None else extras.get(CHAIN)
        expected = (len(actions), self.steps + 1, self.config.chunk_size, self.action_dim)
        if chain is None or tuple(chain.shape) != expected:
            got = "none" if chain is None else tuple(chain.shape)
            raise ValueError(
                f"the flow policy re-scores a chunk by its denoising chain: pass the chunks' extras['{CHAIN}'] "
                f"of shape {expected} (stored as chunk_extras/{CHAIN}), got {got}"
            )
        condition = self.flow_condition(batch)
        chain = chain.to(condition.device, torch.float32)
        ends = self.to_policy_units(actions.to(condition.device, torch.float32))
        error = (chain[:, -1] - ends).abs().max().item() if len(actions) else 0.0
        if error > CHAIN_TOLERANCE:
            raise ValueError(
                f"these chains do not end in these actions (off by {error:.3g}): not chunks sampled together"
            )
        return self._chain_log_prob(condition, chain).to(actions.device)

    def bc_loss(
        self, batch: Batch, actions: torch.Tensor, stage: str = "policy", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Conditional flow matching: on the straight path from noise x_0 to the demonstration, at a random time,
        the velocity head must point from x_0 to the demonstration. Padded targets (mask 0) stay at their noise:
        the chunk the head sees carries nothing of them."""
        condition = self.flow_condition(batch)
        target = self.to_policy_units(actions.to(condition.device))
        noise = torch.randn_like(target)
        if mask is not None:
            mask = mask.to(condition.device)
            target = torch.where(mask[..., None] > 0, target, noise)
        t = torch.rand(len(target), device=target.device)
        x_t = (1.0 - t[:, None, None]) * noise + t[:, None, None] * target
        velocity, _ = self.flow_heads(condition, x_t, t)
        return masked_mean(((velocity - (target - noise)) ** 2).mean(-1), mask)


class FlowPolicy(FlowChain, VisionLanguagePolicy):
    """Keypoint encoder + a velocity head and a Flow-Noise scale head, each reading the whole chunk."""

    family = "flow"

    def build_head(self) -> None:
        config, chunk = self.config, self.config.chunk_size * self.action_dim
        inputs = self.feature_dim + chunk + config.flow.time_dim
        self.velocity, self.noise = head(inputs, config.hidden_dim, chunk), head(inputs, config.hidden_dim, chunk)
        quiet(self.noise)

    def flow_condition(self, batch: Batch) -> torch.Tensor:
        return self.features(batch)

    def flow_heads(
        self, condition: torch.Tensor, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.cat([condition, x.flatten(1), time_embedding(t, self.config.flow.time_dim)], dim=-1)
        return self.velocity(inputs).view_as(x), self.bounded_scale(self.noise(inputs).view_as(x))


class FlowVlmPolicy(FlowChain, OftPolicy):
    """The oft family's VLM and placeholders, with flow heads denoising each action from its placeholder's state."""

    family = "flow_vlm"

    def build_heads(self, width: int) -> None:
        config = self.config
        self.condition = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.hidden_dim))
        inputs = config.hidden_dim + self.action_dim + config.flow.time_dim
        self.velocity = head(inputs, config.hidden_dim, self.action_dim)
        self.noise = head(inputs, config.hidden_dim, self.action_dim)
        quiet(self.noise)

    def flow_condition(self, batch: Batch) -> torch.Tensor:
        return self.condition(self.hidden(batch))  # (B, H, hidden_dim): one state per action

    def flow_heads(
        self, condition: torch.Tensor, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        time = time_embedding(t, self.config.flow.time_dim)[:, None].expand(-1, x.shape[1], -1)
        inputs = torch.cat([condition, x.to(condition.dtype), time], dim=-1)
        return self.velocity(inputs), self.bounded_scale(self.noise(inputs))
