"""The QueST-style policy: skill tokens from an FSQ autoencoder, sampled by an autoregressive prior.

QueST (Mete et al., 2024) compresses each action chunk into a few discrete skill tokens and
learns a prior over token sequences given the observation; RIPT's headline light-policy
results post-train that prior. Here:

- an FSQ autoencoder (finite scalar quantization: each latent dimension is bounded and
  rounded to one of `fsq_levels[i]` values, so the codebook is their product and needs no
  commitment loss) maps every `actions_per_token` actions of a chunk to one token and back;
- a small causal transformer, its first position the observation's features (keypoints of
  the cameras, state, instruction), predicts the chunk's tokens one after another;
- training is staged (`sft_stages`): the autoencoder on demonstration chunks (L1
  reconstruction), then the prior on the tokens the frozen encoder gives them (cross
  entropy); fine-tuning a pretrained policy trains the prior only (`finetune_stages`), and so
  does RIPT, with the observation encoder (`rl_parameters`).

The reference code samples from the top-k tokens but scores the full softmax, so its PPO
ratio is not that of the distribution it sampled from. This policy samples and scores one
distribution, `sampling_log_probs`: logits over temperature, restricted to the top k,
renormalized. A token outside the current top k scores LOG_PROB_FLOOR instead of -inf, so a
PPO ratio stays finite (it is ~0 there, as it should be).

Each token decodes to its own `actions_per_token` actions, independent of the others, so a
stored chunk's tokens are recovered exactly from its actions (the nearest entry of the
decoded codebook; the autoencoder is frozen after its stage). The store, the runtime and
the trainer therefore handle this family's chunks like any other: actions (H, A) with a
log-probability per action. A token's log-probability sits on the first action it decodes
to, and the others of its span carry 0, so the per-action PPO ratio is the per-token ratio.
The command sent for a token is a fixed function of it (decoded, then clipped to the action
bounds), so a token's probability is already that of choosing what the arm received.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ript_robot.policies.base import Batch, masked_mean
from ript_robot.policies.vision import VisionLanguagePolicy

LOG_PROB_FLOOR = -30.0  # log-probability of a token the sampling distribution excludes (top-k)
DECODE_TOLERANCE = 1e-3  # largest |action - decoded action| for a chunk to count as this policy's tokens


class FSQ(nn.Module):
    """Finite scalar quantization: (..., d) latents -> (..., d) codes on a grid, and their token ids."""

    def __init__(self, levels: Sequence[int]):
        """levels: values per dimension (each >= 2); the codebook has prod(levels) entries."""
        super().__init__()
        levels_t = torch.tensor(list(levels), dtype=torch.long)
        self.register_buffer("levels", levels_t, persistent=False)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels_t[:-1]]), 0)
        self.register_buffer("basis", basis, persistent=False)
        self.codebook_size = int(levels_t.prod())

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Bound each dimension to its level range and round (straight-through gradient); values in [-1, 1]."""
        half = (self.levels - 1).float() / 2.0
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        bounded = torch.tanh(z + shift) * half - offset
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return (rounded + offset) / half  # even levels: shift the grid so it is symmetric about 0

    def to_index(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes in [-1, 1] (..., d) -> token ids (...)."""
        half = (self.levels - 1).float() / 2.0
        digits = torch.round(codes * half + half).long()
        return (digits * self.basis).sum(-1)

    def from_index(self, index: torch.Tensor) -> torch.Tensor:
        """Token ids (...) -> codes in [-1, 1] (..., d)."""
        half = (self.levels - 1).float() / 2.0
        digits = (index[..., None] // self.basis) % self.levels
        return (digits.float() - half) / half


class QuestPolicy(VisionLanguagePolicy):
    """Skill-token policy: FSQ autoencoder over action chunks + autoregressive prior (see the module doc)."""

    family = "quest"
    sft_stages = ("autoencoder", "prior")
    # fine-tuning a pretrained policy keeps its skill vocabulary, as QueST's few-shot transfer does: refitting the
    # autoencoder to a handful of demonstrations re-maps the tokens the pretrained prior learned (held-out success
    # after one-demo SFT was lower or equal in 5 runs of 5, 35% -> 10% in one)
    finetune_stages = ("prior",)

    def build_head(self) -> None:
        config = self.config
        q = config.quest
        if config.chunk_size % q.actions_per_token:
            raise ValueError(f"actions_per_token ({q.actions_per_token}) must divide chunk_size ({config.chunk_size})")
        self.tokens = config.chunk_size // q.actions_per_token
        self.log_prob_span = q.actions_per_token  # PPO credits (and averages over) tokens, not their actions
        self.span = q.actions_per_token * self.action_dim  # numbers one token decodes to
        width, d = config.hidden_dim, len(q.fsq_levels)
        self.fsq = FSQ(q.fsq_levels)
        self.encoder = nn.Sequential(
            nn.Linear(self.span, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d)
        )
        self.decoder = nn.Sequential(
            nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, self.span)
        )
        e = q.prior_dim
        self.context = nn.Linear(self.feature_dim, e)
        self.token_embedding = nn.Embedding(self.fsq.codebook_size, e)
        self.position = nn.Parameter(torch.zeros(self.tokens, e))
        layer = nn.TransformerEncoderLayer(e, q.prior_heads, 4 * e, dropout=0.0, batch_first=True, norm_first=True)
        self.prior = nn.TransformerEncoder(layer, q.prior_layers, enable_nested_tensor=False)
        self.prior_head = nn.Linear(e, self.fsq.codebook_size)
        mask = torch.triu(torch.full((self.tokens, self.tokens), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    # --- the autoencoder: chunks <-> tokens -------------------------------------------------------

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Chunks (B, H, A) -> quantized codes (B, n, d) (straight-through)."""
        return self.fsq.quantize(self.encoder(actions.reshape(actions.shape[0], self.tokens, self.span)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, n, d) -> chunks (B, H, A)."""
        return self.decoder(codes).reshape(codes.shape[0], self.chunk_size, self.action_dim)

    def tokens_of(self, actions: torch.Tensor) -> torch.Tensor:
        """The token ids (B, n) a chunk of this policy decoded from; a clear error for other chunks."""
        with torch.no_grad():
            ids = torch.arange(self.fsq.codebook_size, device=actions.device)
            table = self.decoder(self.fsq.from_index(ids))  # (C, span)
            spans = actions.reshape(-1, self.span).to(table.dtype)
            distance = torch.cdist(spans, table)
            nearest = distance.argmin(-1)
            error = (table[nearest] - spans).abs().max().item() if len(spans) else 0.0
        if error > DECODE_TOLERANCE:
            raise ValueError(
                f"these actions are not a chunk this quest policy decoded (off by {error:.3g} from its nearest "
                "skill tokens): it can score only chunks it sampled itself, with the autoencoder they were sampled with"
            )
        return nearest.reshape(actions.shape[0], self.tokens)

    # --- the prior: observation -> token sequence -------------------------------------------------

    def prior_logits(self, batch: Batch, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, n, C): position i is conditioned on the observation and tokens < i."""
        context = self.context(self.features(batch))[:, None]  # (B, 1, e)
        previous = self.token_embedding(tokens[:, :-1])  # (B, n-1, e)
        x = torch.cat([context, previous], dim=1) + self.position
        return self.prior_head(self.prior(x, mask=self.causal_mask, is_causal=True))

    def sampling_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the distribution tokens are sampled from: temperature, then top-k, renormalized.

        Tokens outside the top k get -inf here; `log_prob` floors them at LOG_PROB_FLOOR."""
        q = self.config.quest
        logits = logits / q.temperature
        if 0 < q.top_k < logits.shape[-1]:
            kth = logits.topk(q.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return logits.log_softmax(-1)

    def _per_action(self, token_log_prob: torch.Tensor) -> torch.Tensor:
        """(B, n) token log-probabilities -> (B, H): each on its span's first action, 0 on the rest."""
        out = token_log_prob.new_zeros(token_log_prob.shape[0], self.tokens, self.config.quest.actions_per_token)
        out[..., 0] = token_log_prob
        return out.flatten(1)

    # --- the Policy contract ------------------------------------------------------------------------

    def log_prob(
        self, batch: Batch, actions: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        tokens = self.tokens_of(self.to_policy_units(actions))
        log_probs = self.sampling_log_probs(self.prior_logits(batch, tokens))
        return self._per_action(log_probs.gather(-1, tokens[..., None]).squeeze(-1).clamp(min=LOG_PROB_FLOOR))

    def sample(self, batch: Batch, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        b = batch["image"].shape[0]
        context = self.context(self.features(batch))[:, None]
        tokens = torch.zeros(b, 0, dtype=torch.long, device=context.device)
        chosen = []
        for i in range(self.tokens):
            x = torch.cat([context, self.token_embedding(tokens)], dim=1) + self.position[: i + 1]
            h = self.prior(x, mask=self.causal_mask[: i + 1, : i + 1], is_causal=True)
            log_probs = self.sampling_log_probs(self.prior_head(h[:, -1]))
            token = log_probs.argmax(-1) if deterministic else torch.multinomial(log_probs.exp(), 1).squeeze(-1)
            chosen.append(log_probs.gather(-1, token[:, None]).squeeze(-1))
            tokens = torch.cat([tokens, token[:, None]], dim=1)
        actions = self.decode(self.fsq.from_index(tokens))
        return actions, self._per_action(torch.stack(chosen, dim=1))

    def bc_loss(
        self, batch: Batch, actions: torch.Tensor, stage: str = "prior", mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        actions = self.to_policy_units(actions)
        if stage == "autoencoder":
            return masked_mean((self.decode(self.encode(actions)) - actions).abs().mean(-1), mask)
        if stage == "prior":
            with torch.no_grad():
                tokens = self.fsq.to_index(self.encode(actions))
            logits = self.prior_logits(batch, tokens)
            loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
            # a token whose actions are all padding is no target; one with a recorded action is
            spans = None if mask is None else mask.reshape(len(tokens), self.tokens, -1).amax(-1)
            return masked_mean(loss, spans)
        raise ValueError(f"quest policies train in stages {self.sft_stages}, got {stage!r}")

    def rl_parameters(self) -> list[nn.Parameter]:
        """The prior and the observation encoder; the autoencoder stays as its SFT stage left it."""
        frozen = {id(p) for p in [*self.encoder.parameters(), *self.decoder.parameters()]}
        return [p for p in self.parameters() if id(p) not in frozen]
