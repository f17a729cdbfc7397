"""One prompt and its n sampled responses, kept in a form any later pass can batch.

A round of rollout turns B samples into B `Group`s. Later passes (old/ref
log-probs, the update's micro-batches, DAPO's top-up from several rounds)
re-batch any subset of groups with `batch_groups`, which rebuilds the padded
model input from each group's prompt token row and reuses its video
embeddings: no second decode, preprocessing or ViT pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from longrl.data.sample import Sample
from longrl.models.inputs import ModelInput, assemble_prompt_batch


@dataclass
class Group:
    sample: Sample
    prompt_ids: list[int]
    video_grid_thw: torch.Tensor | None  # [k, 3], one row per video of the prompt
    second_per_grid_ts: torch.Tensor | None  # [k]
    video_pixels: tuple[torch.Tensor, ...]  # per video, for a ViT that runs again
    video_embeds: tuple[torch.Tensor, ...]  # per video, detached
    responses: list[torch.Tensor] = field(default_factory=list)  # n 1-D token tensors
    rollout_log_probs: list[torch.Tensor] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.responses)


@dataclass
class GroupBatch:
    """Groups re-batched: prompts [G rows], responses [G*n rows] grouped by prompt."""

    groups: list[Group]
    prompt: ModelInput
    video_embeds: tuple[torch.Tensor, ...] | None
    response_ids: torch.Tensor  # [G*n, T] right-padded
    response_mask: torch.Tensor  # [G*n, T]
    n: int


def split_groups(
    samples: Sequence[Sample],
    prompt: ModelInput,
    video_embeds: Sequence[torch.Tensor] | None,
) -> list[Group]:
    """Cut a freshly built prompt batch into one Group per row (responses added later)."""
    groups = []
    pixels = _per_video_pixels(prompt)
    for row, sample in enumerate(samples):
        length = int(prompt.prompt_lengths[row])
        ids = prompt.input_ids[row, prompt.prompt_width - length :].tolist()
        videos = list(prompt.video_rows[row]) if prompt.video_rows else []
        index = torch.tensor(videos, dtype=torch.long)
        groups.append(
            Group(
                sample=sample,
                prompt_ids=ids,
                video_grid_thw=prompt.video_grid_thw[index] if videos else None,
                second_per_grid_ts=prompt.second_per_grid_ts[index] if videos else None,
                video_pixels=tuple(pixels[v] for v in videos) if pixels else (),
                video_embeds=tuple(video_embeds[v].detach() for v in videos)
                if video_embeds is not None and videos
                else (),
            )
        )
    return groups


def _per_video_pixels(prompt: ModelInput) -> list[torch.Tensor]:
    if prompt.pixel_values_videos is None:
        return []
    sizes = prompt.video_grid_thw.prod(-1).tolist()
    return list(torch.split(prompt.pixel_values_videos, sizes, dim=0))


def batch_groups(groups: Sequence[Group], model_config, pad_token_id: int) -> GroupBatch:
    if not groups:
        raise ValueError("batch_groups needs at least one group")
    n = groups[0].n
    if any(g.n != n for g in groups):
        raise ValueError(f"groups of different sizes {[g.n for g in groups]}")
    grids = [g.video_grid_thw for g in groups if g.video_grid_thw is not None]
    video_rows, next_video = [], 0
    for g in groups:
        count = 0 if g.video_grid_thw is None else int(g.video_grid_thw.shape[0])
        video_rows.append(tuple(range(next_video, next_video + count)))
        next_video += count
    vision = {}
    if grids:
        pixels = [p for g in groups for p in g.video_pixels]
        vision = dict(
            video_grid_thw=torch.cat(grids),
            second_per_grid_ts=torch.cat([g.second_per_grid_ts for g in groups]),
            video_rows=video_rows,
            pixel_values_videos=torch.cat(pixels) if pixels else None,
        )
    prompt = assemble_prompt_batch(
        [g.prompt_ids for g in groups], model_config, pad_token_id=pad_token_id, **vision
    )
    embeds = tuple(e for g in groups for e in g.video_embeds) if grids else None
    if embeds is not None and len(embeds) != next_video:
        embeds = None  # no cached embeddings (trainable ViT): encode from pixels
    responses = [r for g in groups for r in g.responses]
    width = max(1, max(len(r) for r in responses))
    response_ids = torch.full((len(responses), width), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((len(responses), width), dtype=torch.long)
    for i, r in enumerate(responses):
        response_ids[i, : len(r)] = r
        response_mask[i, : len(r)] = 1
    return GroupBatch(list(groups), prompt, embeds, response_ids, response_mask, n)


def padded(values: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Right-pad 1-D float tensors with zeros to [len(values), width]."""
    out = torch.zeros(len(values), width)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
    return out
