"""Group bookkeeping shared by the group-relative estimators and the DAPO filter.

A "group" is the n responses sampled for one prompt. Callers identify groups
either by an id per sample (ints, strings, uids: anything hashable) or by
laying rewards out as a [G, n] tensor. Everything here turns that into a dense
index 0..G-1 in order of first appearance, so results never depend on how ids
sort and are the same on every rank for the same inputs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch


def dense_group_index(group_ids: Any) -> tuple[torch.Tensor, list[Hashable]]:
    """Map per-sample group ids to (index [N] int64 in 0..G-1, unique ids in first-seen order)."""
    ids = group_ids.tolist() if hasattr(group_ids, "tolist") else list(group_ids)
    position: dict[Hashable, int] = {}
    index = []
    for gid in ids:
        if gid not in position:
            position[gid] = len(position)
        index.append(position[gid])
    return torch.tensor(index, dtype=torch.long), list(position)


def flatten_rewards(
    rewards: torch.Tensor | Sequence[float], group_ids: Any | None
) -> tuple[torch.Tensor, torch.Tensor, list[Hashable]]:
    """Accept rewards [N] with group ids, or [G, n] without; return (rewards [N], index, ids).

    A [G, n] layout means row g holds group g, flattened row-major (sample g*n + j).
    """
    values = torch.as_tensor(rewards)
    if not values.is_floating_point():
        values = values.to(torch.float32)
    if values.dim() == 2:
        if group_ids is not None:
            raise ValueError(
                "rewards of shape [G, n] already define the groups; pass group_ids=None "
                f"(got rewards {tuple(values.shape)} and group_ids too)"
            )
        num_groups, group_size = values.shape
        index = torch.arange(num_groups).repeat_interleave(group_size)
        return values.reshape(-1), index, list(range(num_groups))
    if values.dim() != 1:
        raise ValueError(f"rewards must be [N] or [G, n], got shape {tuple(values.shape)}")
    if group_ids is None:
        raise ValueError("rewards of shape [N] need group_ids (one id per sample)")
    index, unique = dense_group_index(group_ids)
    if index.numel() != values.numel():
        raise ValueError(f"group_ids has {index.numel()} entries but rewards has {values.numel()}")
    return values, index, unique


def group_count_sum(
    values: torch.Tensor, index: torch.Tensor, num_groups: int, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group: number of valid samples and sum of their values (invalid ones ignored)."""
    weight = valid.to(values.dtype)
    counts = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, index, weight)
    sums = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, index, values * weight)
    return counts, sums
