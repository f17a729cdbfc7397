"""Reduce a per-token loss [N, T] to a scalar under a response mask.

Let m_it in {0, 1} be the mask, l_it the loss, L_i = sum_t m_it (response
length), and S = {i : L_i > 0} the sequences with at least one token.

- "token-mean":              sum_{i,t} m_it l_it / sum_{i,t} m_it
- "seq-mean-token-mean":     (1/|S|) sum_{i in S} (sum_t m_it l_it) / L_i
- "seq-mean-token-sum":      (1/|S|) sum_{i in S} sum_t m_it l_it
- "seq-mean-token-sum-norm": (1/|S|) sum_{i in S} (sum_t m_it l_it) / max_len
                             (Dr.GRPO: a FIXED max_len, default T = mask.shape[1];
                             pass the rollout's max response length so the scale
                             does not move with padding. verl's version omits the
                             1/|S|; ours keeps the paper's 1/G.)

EasyR1's `loss_avg_mode` names are accepted too: "token" = "token-mean",
"seq" = "seq-mean-token-mean".

Gradient accumulation over micro-batches and ranks: pass `normalizer` to
divide by a global count instead of the local one (the global token count for
"token-mean", the global sequence count for the "seq-mean-*" modes); the sum of
the micro-batch losses then equals the full-batch loss.

An all-masked input gives 0 (still connected to the graph, so backward runs
the same way on every rank). Masked entries are never read (NaN there is fine).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _masked(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if per_token.shape != mask.shape:
        raise ValueError(
            f"loss {tuple(per_token.shape)} and mask {tuple(mask.shape)} must have the same shape"
        )
    mask = mask.bool()
    return torch.where(mask, per_token, torch.zeros_like(per_token)), mask


def _divide(total: torch.Tensor, local_count: float, normalizer: float | None) -> torch.Tensor:
    denominator = local_count if normalizer is None else normalizer
    if denominator <= 0:
        if normalizer is not None:
            raise ValueError(f"normalizer must be > 0, got {normalizer}")
        return total * 0.0
    return total / denominator


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask is true; 0 when nothing is masked in."""
    kept, mask = _masked(values, mask)
    return _divide(kept.sum(), float(mask.sum()), None)


def token_mean(per_token, mask, *, max_len=None, normalizer=None):
    """sum_{i,t} m l / sum_{i,t} m."""
    kept, mask = _masked(per_token, mask)
    return _divide(kept.sum(), float(mask.sum()), normalizer)


def seq_mean_token_mean(per_token, mask, *, max_len=None, normalizer=None):
    """(1/|S|) sum_i (sum_t m l) / L_i."""
    kept, mask = _masked(per_token, mask)
    lengths = mask.sum(dim=1)
    per_seq = kept.sum(dim=1) / lengths.clamp(min=1)
    return _divide(per_seq.sum(), float((lengths > 0).sum()), normalizer)


def seq_mean_token_sum(per_token, mask, *, max_len=None, normalizer=None):
    """(1/|S|) sum_i sum_t m l."""
    kept, mask = _masked(per_token, mask)
    lengths = mask.sum(dim=1)
    return _divide(kept.sum(), float((lengths > 0).sum()), normalizer)


def seq_mean_token_sum_norm(per_token, mask, *, max_len=None, normalizer=None):
    """(1/|S|) sum_i (sum_t m l) / max_len, max_len defaulting to T."""
    kept, mask = _masked(per_token, mask)
    length_norm = mask.shape[1] if max_len is None else max_len
    if length_norm <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    lengths = mask.sum(dim=1)
    return _divide(kept.sum() / length_norm, float((lengths > 0).sum()), normalizer)


AggFn = Callable[..., torch.Tensor]

# Names as verl users write them (`loss_agg_mode`), plus EasyR1's "token"/"seq".
LOSS_AGG_MODES: dict[str, AggFn] = {
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum": seq_mean_token_sum,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
    "token": token_mean,
    "seq": seq_mean_token_mean,
}


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    max_len: int | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Scalar loss from per-token values by `mode` (formulas in the module docstring)."""
    try:
        reduce = LOSS_AGG_MODES[mode]
    except KeyError:
        raise ValueError(
            f"unknown loss_agg_mode {mode!r}; choose one of {sorted(LOSS_AGG_MODES)}"
        ) from None
    return reduce(per_token, mask, max_len=max_len, normalizer=normalizer)
