"""Next-token choice from logits: temperature, top-k, top-p, seeded. Pure tensor functions."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    max_new_tokens: int = 64
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def scaled_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs of the tempered distribution (temperature 0 reads as 1: greedy keeps raw logits).

    These are what the policy's log-prob passes compute too, so rollout and
    training log-probs are comparable; top-k/top-p only decide which token is drawn.
    """
    scale = temperature if temperature > 0 else 1.0
    return torch.log_softmax(logits.float() / scale, dim=-1)


def truncate_logits(log_probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask tokens outside top-k and outside the smallest set whose mass reaches top_p."""
    masked = log_probs
    if 0 < top_k < log_probs.shape[-1]:
        kth = torch.topk(log_probs, top_k, dim=-1).values[..., -1:]
        masked = masked.masked_fill(masked < kth, float("-inf"))
    if top_p < 1.0:
        sorted_lp, order = torch.sort(masked, dim=-1, descending=True)
        cumulative = sorted_lp.softmax(-1).cumsum(-1)
        # Keep a token while the mass *before* it is below top_p (the first token always stays).
        remove_sorted = (cumulative - sorted_lp.softmax(-1)) >= top_p
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        masked = masked.masked_fill(remove, float("-inf"))
    return masked


def choose_tokens(
    log_probs: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> torch.Tensor:
    """One token id per row of `log_probs` [N, V]."""
    if params.greedy:
        return log_probs.argmax(dim=-1)
    truncated = truncate_logits(log_probs, params.top_k, params.top_p)
    probs = truncated.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
