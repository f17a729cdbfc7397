"""A stand-in vision-tower call, for a rank that has nothing to encode.

Under FSDP the vision tower is a sharded unit: its forward all-gathers its weights and,
when it trains, its backward reduce-scatters its gradients, over every rank. A rank
whose share of frames is empty (more SP ranks than temporal patch groups), or whose
micro-batch has no video, must still call the tower as often as the others. It encodes
one minimal clip (one temporal group of merge x merge patches, zeros) and uses none of
the result (zero rows, or times zero), so every number stays as it was.

The counters of encoded frames and tower calls skip these calls (`is_placeholder_call`).
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule

_ATTRIBUTE = "longrl_placeholder_call"


def forward_is_collective(visual: torch.nn.Module) -> bool:
    """Does calling this tower take part in a collective (it is an FSDP unit)?"""
    return isinstance(visual, FSDPModule)


def tower_class(visual: torch.nn.Module) -> type:
    """The tower's own class (FSDP swaps in a subclass named FSDP<class>)."""
    return next(c for c in type(visual).__mro__ if not issubclass(c, FSDPModule))


def placeholder_embeddings(inner: torch.nn.Module) -> torch.Tensor:
    """The embeddings of one minimal all-zero clip by `inner.visual` ([1, hidden] for
    Qwen2-VL / Qwen2.5-VL), in the caller's grad mode."""
    visual = inner.visual
    patch = visual.patch_embed
    merge = int(visual.spatial_merge_size)
    width = patch.in_channels * patch.temporal_patch_size * patch.patch_size**2
    device = next(visual.parameters()).device
    pixels = torch.zeros(merge * merge, width, device=device)
    grid = torch.tensor([[1, merge, merge]], dtype=torch.long, device=device)
    setattr(visual, _ATTRIBUTE, True)
    try:
        out = inner.get_video_features(pixels, grid, return_dict=True)
    finally:
        setattr(visual, _ATTRIBUTE, False)
    return torch.cat(tuple(out.pooler_output))


def is_placeholder_call(visual: torch.nn.Module) -> bool:
    return bool(getattr(visual, _ATTRIBUTE, False))
