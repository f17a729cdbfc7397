"""SFT loss maths: cross-entropy summed over target tokens, and micro-batch plans.

Each micro-batch's summed loss is divided by the target-token count of the
whole optimizer step (known before the first forward), so the accumulated
gradient is exactly the gradient of the step's token-mean loss: accumulation
over micro-batches equals one big batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class TokenLoss:
    summed: torch.Tensor  # sum of per-token cross-entropies (differentiable)
    correct: int  # targets where the argmax is the target token
    count: int  # target tokens


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> TokenLoss:
    """logits [K, vocab] predicting labels [K]; computed in float32."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    summed = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    correct = int((logits.detach().argmax(-1) == labels).sum())
    return TokenLoss(summed, correct, int(labels.numel()))


def length_buckets(lengths: Sequence[int], micro_batch_size: int) -> list[list[int]]:
    """Indices split into micro-batches of similar length, longest first.

    Rows of a micro-batch are padded to its longest, so grouping similar lengths
    keeps padding small; the longest micro-batch goes first so that running out
    of memory shows on the first forward, not at the end of a step.
    """
    if micro_batch_size <= 0:
        raise ValueError(f"micro_batch_size must be > 0, got {micro_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
