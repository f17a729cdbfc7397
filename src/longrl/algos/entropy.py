"""Per-token entropy of the policy's next-token distribution (a training metric).

H = -sum_v p_v log p_v, with log p = log_softmax(logits) (stable for any logit
scale; -inf logits, e.g. masked vocabulary entries, contribute 0, not NaN).
Rows are processed `chunk_size` at a time so the float32 temporaries are
[chunk_size, V] whatever the sequence length: for a 150k vocabulary and 8k
tokens the full float32 softmax alone would be ~5 GB.
"""

from __future__ import annotations

import torch


def entropy_from_logits(logits: torch.Tensor, *, chunk_size: int = 1024) -> torch.Tensor:
    """Entropy [...] of logits [..., V] in nats, float32.

    Keeps autograd if `logits` requires grad; call it under `torch.no_grad()`
    when it is only a metric (then nothing but the output is retained).
    """
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(
            f"logits need a non-empty last (vocabulary) dim, got {tuple(logits.shape)}"
        )
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    lead_shape = logits.shape[:-1]
    rows = logits.reshape(-1, logits.shape[-1])
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        log_p = torch.log_softmax(rows[start : start + chunk_size].float(), dim=-1)
        p = log_p.exp()
        # p * log p is 0 * -inf = NaN where a logit is -inf; its true limit is 0.
        plogp = torch.where(p > 0, p * log_p, torch.zeros_like(p))
        pieces.append(-plogp.sum(dim=-1))
    if not pieces:
        return torch.zeros(lead_shape, dtype=torch.float32)
    return torch.cat(pieces).reshape(lead_shape)
