"""PPO-clip policy loss with asymmetric bounds ("clip-higher") and dual clip.

Per token, with r = exp(clamp(log p - log p_old, ±log_ratio_clamp)) and A the
advantage (eps_low = clip_ratio_low, eps_high = clip_ratio_high, c = clip_ratio_c):

    clipped = max(-A * r, -A * clip(r, 1 - eps_low, 1 + eps_high))
    loss    = min(clipped, -A * c)   if A < 0 and dual clip is on
            = clipped                otherwise

- clip-higher (DAPO): eps_high > eps_low lets low-probability tokens with A > 0
  grow further before the gradient stops.
- dual clip (A < 0 only): caps the loss at c * |A| when r grew far above 1, so
  one token that became very likely cannot dominate the update.
- the log-ratio clamp (±20) keeps exp finite; gradients of clamped tokens are 0.

The loss is per token (0 on masked tokens); reduce it with
`aggregate_loss(out.per_token_loss, mask, mode)` and add a KL term if wanted.
`old_log_probs` and `advantages` are detached: gradient reaches `log_probs` only.

Metrics (fractions of valid tokens, detached 0-d tensors; average them across
ranks yourself):
- clip_frac_high: A > 0 and r > 1 + eps_high (gradient stopped by the upper bound)
- clip_frac_low:  A < 0 and r < 1 - eps_low  (gradient stopped by the lower bound)
- dual_clip_frac: A < 0 and r > c            (loss capped by the dual clip)
- approx_kl:      mean of log p_old - log p  (k1 estimate of KL(p_old || p))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longrl.algos.aggregate import masked_mean


@dataclass(frozen=True)
class PolicyLossOutput:
    per_token_loss: torch.Tensor  # [N, T], 0 on masked tokens
    clip_frac_low: torch.Tensor
    clip_frac_high: torch.Tensor
    dual_clip_frac: torch.Tensor
    approx_kl: torch.Tensor

    def metrics(self) -> dict[str, float]:
        return {
            "actor/pg_clipfrac_low": float(self.clip_frac_low),
            "actor/pg_clipfrac_high": float(self.clip_frac_high),
            "actor/pg_clipfrac_dual": float(self.dual_clip_frac),
            "actor/ppo_kl": float(self.approx_kl),
        }


def ppo_clip_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float | None = 3.0,
    log_ratio_clamp: float = 20.0,
) -> PolicyLossOutput:
    """Per-token PPO-clip loss and clip metrics; see the module docstring for the formula.

    `clip_ratio_c=None` turns the dual clip off; otherwise it must be > 1.
    """
    shape = log_probs.shape
    for name, tensor in (
        ("old_log_probs", old_log_probs),
        ("advantages", advantages),
        ("response_mask", response_mask),
    ):
        if tensor.shape != shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, log_probs has {tuple(shape)}"
            )
    if not 0 <= clip_ratio_low < 1 or clip_ratio_high < 0:
        raise ValueError(
            f"need 0 <= clip_ratio_low < 1 and clip_ratio_high >= 0, "
            f"got {clip_ratio_low}, {clip_ratio_high}"
        )
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c (dual clip) must be > 1 or None, got {clip_ratio_c}")

    mask = response_mask.bool()
    advantages = advantages.detach().to(log_probs.dtype)
    log_ratio = (log_probs - old_log_probs.detach()).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)

    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    loss = torch.maximum(unclipped, clipped)
    negative = advantages < 0
    if clip_ratio_c is not None:
        loss = torch.where(negative, torch.minimum(loss, -advantages * clip_ratio_c), loss)
    loss = torch.where(mask, loss, torch.zeros_like(loss))

    with torch.no_grad():
        r = ratio.detach()
        high = (advantages > 0) & (r > 1.0 + clip_ratio_high)
        low = negative & (r < 1.0 - clip_ratio_low)
        dual = torch.zeros_like(mask) if clip_ratio_c is None else negative & (r > clip_ratio_c)
        metrics = {
            "clip_frac_low": masked_mean(low.float(), mask),
            "clip_frac_high": masked_mean(high.float(), mask),
            "dual_clip_frac": masked_mean(dual.float(), mask),
            "approx_kl": masked_mean(-log_ratio.detach(), mask),
        }
    return PolicyLossOutput(per_token_loss=loss, **metrics)
