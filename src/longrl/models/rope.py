"""Position ids for Qwen2.5-VL's 3-D M-RoPE, by the Qwen reference rule (one place).

Every sequence the model sees (rollout prompt, log-prob pass, SFT/RL update) gets
its positions from `mrope_position_ids`; nothing else computes them.

The rule (Qwen authors' code, transformers 4.x, vLLM; real checkpoints were
trained with it):

- text tokens: the same position on the three axes (temporal, height, width),
  increasing by 1;
- a vision block of grid (t, h, w) patches, merged to (t, h/m, w/m) tokens in
  (t, row, column) order, starting at position `s`:
  temporal = s + floor(t_idx * second_per_grid_t * tokens_per_second),
  height = s + row, width = s + column. The product is taken before flooring,
  so fractional intervals (e.g. 0.5 s per temporal patch) are kept;
- the text after a block continues at max(all positions of the block) + 1.

transformers 5.x's `get_rope_index` instead continues the text at
s + max(h, w)/m, which differs from the rule above whenever the temporal
positions of a video outrun the spatial ones (any long video). See DESIGN.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

# Position given to padded slots. Its value never matters (padding is masked
# out of attention); 1 is what the reference implementation uses.
PAD_POSITION = 1

# Floor after multiplying, but forgive float error just below an integer
# (e.g. 3 * (2/3 s) * 2 tok/s = 3.9999999999999996 must give 4, not 3).
_FLOOR_TOLERANCE = 1e-6


class ModelInputError(ValueError):
    """A model input (tokens, vision grids, embeddings, positions) is inconsistent."""


@dataclass(frozen=True)
class MRopeSpec:
    """The model constants the position rule needs (read from a model config)."""

    video_token_id: int
    image_token_id: int
    vision_start_token_id: int
    spatial_merge_size: int = 2
    tokens_per_second: float = 2

    @classmethod
    def from_config(cls, config: Any) -> MRopeSpec:
        """Read the constants from a Qwen2.5-VL config (`model.config`)."""
        vision = config.vision_config
        return cls(
            video_token_id=int(config.video_token_id),
            image_token_id=int(config.image_token_id),
            vision_start_token_id=int(config.vision_start_token_id),
            spatial_merge_size=int(vision.spatial_merge_size),
            tokens_per_second=float(vision.tokens_per_second),
        )


def vision_block_positions(
    start: int, grid_thw: tuple[int, int, int], spatial_merge_size: int, time_interval: float
) -> torch.Tensor:
    """Positions [3, t*(h/m)*(w/m)] of one vision block starting at `start`.

    `time_interval` is position units per temporal patch
    (second_per_grid_t * tokens_per_second for a video; irrelevant for an
    image, whose t is 1).
    """
    t, h, w = (int(x) for x in grid_thw)
    if h % spatial_merge_size or w % spatial_merge_size:
        raise ModelInputError(
            f"vision grid {grid_thw} is not divisible by spatial_merge_size={spatial_merge_size}"
        )
    hm, wm = h // spatial_merge_size, w // spatial_merge_size
    temporal = [math.floor(i * time_interval + _FLOOR_TOLERANCE) for i in range(t)]
    t_idx = torch.tensor(temporal, dtype=torch.long).view(t, 1, 1).expand(t, hm, wm)
    h_idx = torch.arange(hm, dtype=torch.long).view(1, hm, 1).expand(t, hm, wm)
    w_idx = torch.arange(wm, dtype=torch.long).view(1, 1, wm).expand(t, hm, wm)
    return torch.stack([t_idx, h_idx, w_idx]).reshape(3, -1) + start


def _row_positions(
    ids: list[int],
    row: int,
    grids: dict[int, list[tuple[tuple[int, int, int], float]]],
    cursors: dict[int, int],
    spec: MRopeSpec,
) -> torch.Tensor:
    """Positions [3, n] of one unpadded row; consumes grids from `grids` via `cursors`."""
    pieces: list[torch.Tensor] = []
    next_pos = 0
    i, n = 0, len(ids)
    while i < n:
        tok = ids[i]
        if tok not in grids:
            j = i
            while j < n and ids[j] not in grids:
                j += 1
            text = torch.arange(next_pos, next_pos + (j - i), dtype=torch.long)
            pieces.append(text.view(1, -1).expand(3, -1))
            next_pos += j - i
            i = j
            continue
        kind = "video" if tok == spec.video_token_id else "image"
        k = cursors[tok]
        if k >= len(grids[tok]):
            raise ModelInputError(
                f"row {row}: more {kind} blocks in input_ids than entries in {kind}_grid_thw "
                f"({len(grids[tok])}); pass one grid per {kind} in batch order"
            )
        grid, interval = grids[tok][k]
        cursors[tok] = k + 1
        m = spec.spatial_merge_size
        block_len = grid[0] * (grid[1] // m) * (grid[2] // m)
        if i == 0 or ids[i - 1] != spec.vision_start_token_id:
            raise ModelInputError(
                f"row {row}: {kind} block at token {i} is not preceded by <|vision_start|> "
                f"(id {spec.vision_start_token_id}); was the prompt truncated?"
            )
        if i + block_len > n or any(t != tok for t in ids[i : i + block_len]):
            raise ModelInputError(
                f"row {row}: {kind} {k} has grid {grid} = {block_len} tokens, but the run of "
                f"{kind} tokens at token {i} is shorter; grids and input_ids disagree"
            )
        block = vision_block_positions(next_pos, grid, m, interval)
        pieces.append(block)
        next_pos = int(block.max()) + 1
        i += block_len
    return torch.cat(pieces, dim=1)


def mrope_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | list[float] | None = None,
    image_grid_thw: torch.Tensor | None = None,
    video_token_id: int,
    image_token_id: int,
    vision_start_token_id: int,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D M-RoPE positions by the Qwen reference rule (module docstring).

    input_ids, attention_mask: [B, L]; padding (left or right) is where the
    mask is 0: those slots get PAD_POSITION, and real tokens get the same
    positions whatever the amount of padding. Grids are listed in batch order
    (row 0's videos first), one `second_per_grid_ts` entry per video.

    Returns (position_ids [3, B, L] long, rope_deltas [B, 1] long) where
    rope_deltas = max position + 1 - number of real tokens: the k-th token
    generated after the prompt (k = 0, 1, ...) has position
    num_real + k + rope_delta on all three axes, as transformers 5.x's decode
    path computes it from `attention_mask.cumsum(-1) - 1 + rope_deltas`.
    """
    if input_ids.ndim != 2:
        raise ModelInputError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ModelInputError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    spec = MRopeSpec(
        video_token_id=video_token_id,
        image_token_id=image_token_id,
        vision_start_token_id=vision_start_token_id,
        spatial_merge_size=spatial_merge_size,
        tokens_per_second=tokens_per_second,
    )
    grids = _grids_by_token(video_grid_thw, second_per_grid_ts, image_grid_thw, spec)
    cursors = dict.fromkeys(grids, 0)

    batch, length = input_ids.shape
    positions = torch.full((3, batch, length), PAD_POSITION, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    mask = attention_mask.bool().cpu()
    ids_cpu = input_ids.cpu()
    for b in range(batch):
        real = ids_cpu[b][mask[b]].tolist()
        if not real:
            raise ModelInputError(f"row {b}: attention_mask has no real tokens")
        row_pos = _row_positions(real, b, grids, cursors, spec)
        positions[:, b, mask[b]] = row_pos
        deltas[b, 0] = int(row_pos.max()) + 1 - len(real)
    for tok, used in cursors.items():
        if used != len(grids[tok]):
            kind = "video" if tok == spec.video_token_id else "image"
            raise ModelInputError(
                f"{len(grids[tok])} {kind} grids given but only {used} {kind} blocks found in "
                "input_ids"
            )
    return positions.to(input_ids.device), deltas.to(input_ids.device)


def _grids_by_token(
    video_grid_thw: torch.Tensor | None,
    second_per_grid_ts: torch.Tensor | list[float] | None,
    image_grid_thw: torch.Tensor | None,
    spec: MRopeSpec,
) -> dict[int, list[tuple[tuple[int, int, int], float]]]:
    """{pad token id: [(grid, position units per temporal patch), ...]} for videos and images."""
    videos = [] if video_grid_thw is None else [tuple(g) for g in video_grid_thw.tolist()]
    images = [] if image_grid_thw is None else [tuple(g) for g in image_grid_thw.tolist()]
    if videos and second_per_grid_ts is None:
        raise ModelInputError(
            "video_grid_thw given without second_per_grid_ts: pass the seconds per temporal "
            "patch of each video (temporal_patch_size / sampled fps)"
        )
    seconds = [] if second_per_grid_ts is None else [float(s) for s in second_per_grid_ts]
    if len(seconds) != len(videos):
        raise ModelInputError(
            f"second_per_grid_ts has {len(seconds)} entries for {len(videos)} videos"
        )
    return {
        spec.video_token_id: [
            (g, s * spec.tokens_per_second) for g, s in zip(videos, seconds, strict=True)
        ],
        spec.image_token_id: [(g, 1.0) for g in images],
    }


def text_position_ids(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D positions [B, L] for a text-only model: 0, 1, ... over real tokens.

    Padded slots get PAD_POSITION. rope_deltas [B, 1] are all 0 (the next token's
    position is the number of real tokens), kept for a uniform interface.
    """
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, PAD_POSITION)
    if bool((mask.sum(-1) == 0).any()):
        raise ModelInputError("attention_mask has a row with no real tokens")
    return positions, torch.zeros(mask.shape[0], 1, dtype=torch.long, device=mask.device)


def continued_positions(
    rope_deltas: torch.Tensor, num_real: torch.Tensor, num_new: int, *, axes: int = 3
) -> torch.Tensor:
    """Positions of `num_new` tokens appended after each row's real tokens.

    Token k gets num_real + k + rope_delta on every axis (what generation does).
    rope_deltas, num_real: [B, 1] and [B]. Returns [axes, B, num_new]
    (or [B, num_new] for axes=1, the text-only case).
    """
    steps = torch.arange(num_new, dtype=torch.long, device=rope_deltas.device)
    start = num_real.view(-1, 1).to(rope_deltas.device) + rope_deltas.view(-1, 1)
    pos = start + steps.view(1, -1)
    return pos if axes == 1 else pos.unsqueeze(0).expand(axes, -1, -1).clone()
