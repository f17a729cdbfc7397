"""Video encoding with the frames split across a sequence-parallel group.

Every rank of a sequence-parallel group holds the same batch. Instead of each
rank running the vision tower on every frame, the temporal patch groups (grid
t: `temporal_patch_size` consecutive frames, patchified together) of all videos
of the batch are cut into one contiguous, patch-balanced share per rank; each
rank encodes only its share and the embeddings are all-gathered once (in
chunks, `chunked_all_gather`). No frame is encoded by two ranks.

Why this is exact. The Qwen2-VL and Qwen2.5-VL vision towers never mix tokens
of different temporal patch groups: every attention block, window-attention and
"full"-attention blocks alike (`fullatt_block_indexes`), attends within segments
of `h * w` patches, one per temporal group (transformers' `get_vision_cu_seqlens`
with `merge_temporal=False`); windows are cut inside each group; the rotary
positions are (h, w) only, repeated per group; the patch merger joins 2x2
spatial neighbours of one group. So a video of grid (t, h, w) encodes to the
concatenation of the encodings of its sub-clips (t1, h, w), (t2, h, w), ...
(tested to 1e-5 against whole-video encoding). A tower whose attention spans
frames (e.g. clip-level attention) breaks this; it is refused by name
(`FRAME_LOCAL_TOWERS`) rather than silently encoded wrong.

Gradients (a trainable vision tower): the gathered embeddings feed the
sequence-parallel LM, whose loss is replicated on every rank and whose
per-rank gradient w.r.t. the embeddings covers only that rank's sequence shard.
The gather's backward therefore sums the embedding gradient over the group and
keeps this rank's rows; the tower's parameter gradients then hold this rank's
frames' contribution and sum over the group to the full gradient, like every
other parameter under sequence parallelism.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from longrl.parallel.gather import chunked_all_gather
from longrl.parallel.sequence import group_rank, group_size
from longrl.vision.placeholder import (
    forward_is_collective,
    is_placeholder_call,
    placeholder_embeddings,
    tower_class,
)

# Vision towers verified to attend only within one temporal patch group.
FRAME_LOCAL_TOWERS = frozenset(
    {"Qwen2_5_VisionTransformerPretrainedModel", "Qwen2VisionTransformerPretrainedModel"}
)


class FrameSplitError(ValueError):
    """The model's vision tower cannot be split by frames; encode with sp=1 or add it once verified."""


@dataclass(frozen=True)
class FramePiece:
    """Temporal patch groups [t_start, t_stop) of video `video`."""

    video: int
    t_start: int
    t_stop: int


def split_frames(grids: Sequence[Sequence[int]], parts: int) -> list[list[FramePiece]]:
    """Contiguous shares of all temporal patch groups, balanced by patch count.

    grids: (t, h, w) per video, in batch order. Group j of video v goes to the part
    holding its midpoint on the cumulative patch axis, so equal-size groups split
    as evenly as they can and the parts, read in rank order, are the videos in order.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    total = sum(t * h * w for t, h, w in grids)
    shares: list[list[FramePiece]] = [[] for _ in range(parts)]
    done = 0
    for video, (t, h, w) in enumerate(grids):
        size = h * w
        for j in range(t):
            part = min(parts - 1, (2 * done + size) * parts // (2 * total)) if total else 0
            pieces = shares[part]
            if pieces and pieces[-1].video == video and pieces[-1].t_stop == j:
                pieces[-1] = FramePiece(video, pieces[-1].t_start, j + 1)
            else:
                pieces.append(FramePiece(video, j, j + 1))
            done += size
    return shares


def check_frame_local(visual: torch.nn.Module) -> None:
    name = tower_class(visual).__name__
    if name not in FRAME_LOCAL_TOWERS:
        raise FrameSplitError(
            f"vision tower {name} is not known to keep attention within one temporal patch "
            f"group, so splitting its frames across ranks may change its output; known: "
            f"{sorted(FRAME_LOCAL_TOWERS)}. Run with worker.actor.ulysses_sequence_parallel_size=1"
        )


def encode_videos(
    model: torch.nn.Module,
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    *,
    num_chunks: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Embeddings [tokens_v, hidden] of each video, this rank encoding only its share of frames.

    `model` is a Qwen-VL model (`model.model.get_video_features`). With a group of
    one rank this is a single vision-tower call on all videos. Gradients flow to
    the tower when grad mode is on (see the module docstring).
    """
    if pixel_values_videos is None or video_grid_thw is None:
        raise ValueError("no video pixels to encode (this batch has no videos)")
    inner = model.model
    if group_size(group) == 1:
        out = inner.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        return tuple(out.pooler_output)
    check_frame_local(inner.visual)
    merge = inner.visual.spatial_merge_size**2
    grids = [tuple(int(x) for x in row) for row in video_grid_thw.tolist()]
    shares = split_frames(grids, group_size(group))
    tokens = [sum(_piece_tokens(p, grids, merge) for p in share) for share in shares]
    rank = group_rank(group)
    local = _encode_pieces(inner, pixel_values_videos, grids, shares[rank])
    # Same branch on every rank: trainable tower and grad mode are shared by the group.
    trains = torch.is_grad_enabled() and any(p.requires_grad for p in inner.visual.parameters())
    if local is None and forward_is_collective(inner.visual):
        # No frames here, but a sharded tower's forward is a collective every rank joins.
        local = placeholder_embeddings(inner)[:0]
    elif local is None:
        hidden = _embedding_width(model)
        local = pixel_values_videos.new_zeros((0, hidden), dtype=inner.visual.dtype)
        local.requires_grad_(trains)
    if trains:
        gathered = _GatherFrames.apply(local, group, num_chunks, sum(tokens[:rank]))
    else:
        gathered = chunked_all_gather(local.detach(), group, num_chunks=num_chunks)
    sizes = [t * h * w // merge for t, h, w in grids]
    return tuple(torch.split(gathered, sizes))


def _piece_tokens(piece: FramePiece, grids, merge: int) -> int:
    _, h, w = grids[piece.video]
    return (piece.t_stop - piece.t_start) * h * w // merge


def _encode_pieces(inner, pixels: torch.Tensor, grids, pieces: list[FramePiece]):
    if not pieces:
        return None
    starts, offset = [], 0
    for t, h, w in grids:
        starts.append(offset)
        offset += t * h * w
    if pixels.shape[0] != offset:
        raise ValueError(f"{pixels.shape[0]} pixel rows for grids totalling {offset} patches")
    rows, local_grids = [], []
    for piece in pieces:
        _, h, w = grids[piece.video]
        begin = starts[piece.video] + piece.t_start * h * w
        rows.append(pixels[begin : begin + (piece.t_stop - piece.t_start) * h * w])
        local_grids.append([piece.t_stop - piece.t_start, h, w])
    grid = torch.tensor(local_grids, dtype=torch.long, device=pixels.device)
    out = inner.get_video_features(torch.cat(rows), grid, return_dict=True)
    return torch.cat(tuple(out.pooler_output))


def _embedding_width(model) -> int:
    config = model.config
    vision = getattr(config, "vision_config", None)
    width = getattr(vision, "out_hidden_size", None)
    if width is None:  # Qwen2-VL: the merger projects to the language model's width
        width = getattr(config, "text_config", config).hidden_size
    return int(width)


class _GatherFrames(torch.autograd.Function):
    """All-gather forward; backward sums the gradient over the group and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, local, group, num_chunks, start):
        ctx.group, ctx.start, ctx.length = group, start, local.shape[0]
        return chunked_all_gather(local, group, num_chunks=num_chunks)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.start : ctx.start + ctx.length], None, None, None


class FrameCounter:
    """Counts the frames (temporal groups x temporal_patch_size) a vision tower encodes."""

    def __init__(self, visual: torch.nn.Module | None) -> None:
        self.frames = 0
        self._per_group = 0
        if visual is not None:
            self._per_group = int(getattr(visual.config, "temporal_patch_size", 1))
            visual.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, _output) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid is not None and not is_placeholder_call(module):
            self.frames += int(grid[:, 0].sum()) * self._per_group

    def take(self) -> int:
        frames, self.frames = self.frames, 0
        return frames
