"""The one place that builds what the model sees: ids, embeddings, positions.

Rollout, log-prob passes, SFT and RL updates all go through these functions, so
they see the same sequence (video embeddings at the placeholder, same 3-D
positions). Peers that built the sequence twice got two different layouts.

Layout of a batch:

    prompt rows   [pad ... pad | prompt tokens]            left padded
    with replies  [pad ... pad | prompt tokens | reply pad] reply right padded

All prompts end at column `prompt_width - 1`, so `logits[:, prompt_width - 1:-1]`
predict the reply tokens `input_ids[:, prompt_width:]`.

Videos are stored once per distinct video (`pixel_values_videos`,
`video_grid_thw`, `second_per_grid_ts`, one entry per video) and each row says
which of them it shows, in order (`video_rows`). Rows repeated for a group of n
replies therefore share one ViT pass and one set of embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from longrl.data.sample import Sample
from longrl.models.prompts import build_messages
from longrl.models.rope import (
    PAD_POSITION,
    ModelInputError,
    MRopeSpec,
    continued_positions,
    mrope_position_ids,
    text_position_ids,
)


@dataclass(frozen=True)
class VideoClip:
    """Decoded frames of one video and the rate they were sampled at.

    frames: [T, H, W, 3] uint8 (or whatever the processor's video processor
    takes); fps: sampled frames per second (frame i+1 is 1/fps s after frame i),
    which sets the temporal positions (second_per_grid_ts = temporal_patch / fps).
    """

    frames: Any
    fps: float

    @classmethod
    def from_decoded(cls, decoded: Any) -> VideoClip:
        """From `longrl.video.decode.DecodedFrames`: T frames spread over the whole video.

        The rate is T / duration, as Qwen's own video loader computes the sampled
        fps (for fps-based sampling it is the requested fps up to rounding).
        """
        duration = float(decoded.info.duration)
        if not duration > 0:
            raise ModelInputError(
                f"{decoded.info.path}: duration {duration} s, cannot tell the sampling rate"
            )
        return cls(frames=decoded.frames, fps=len(decoded.frames) / duration)


@dataclass(frozen=True)
class ModelInput:
    """A batch ready for the model; build it with the functions of this module.

    input_ids, attention_mask: [B, L]. position_ids: [3, B, L] (M-RoPE) or
    [B, L] (text-only model). rope_deltas: [B, 1] (see rope.mrope_position_ids).
    prompt_lengths: [B] real prompt tokens per row; prompt_width: prompt columns.
    response_mask: [B, L], 1 at reply tokens (None for a prompt-only batch).
    Vision tensors hold one entry per distinct video/image; video_rows[b] lists the
    videos row b shows, in order (image_rows likewise).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rope_deltas: torch.Tensor
    prompt_lengths: torch.Tensor
    prompt_width: int
    pad_token_id: int
    response_mask: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None
    second_per_grid_ts: torch.Tensor | None = None
    video_rows: tuple[tuple[int, ...], ...] = ()
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    image_rows: tuple[tuple[int, ...], ...] = ()

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> ModelInput:
        """The same input with every tensor on `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)


def _in_row_order(per_item: torch.Tensor | None, rows: Sequence[Sequence[int]]):
    """Per-item tensor in batch order: one entry per vision block, repeats included."""
    if per_item is None:
        return None
    order = [i for row in rows for i in row]
    return per_item[torch.tensor(order, dtype=torch.long)] if order else per_item[:0]


# --- building ------------------------------------------------------------------------


def is_mrope_model(model_config: Any) -> bool:
    """Qwen-VL style models (3-D positions) have a vision config; text-only ones do not."""
    return getattr(model_config, "vision_config", None) is not None


def assemble_prompt_batch(
    rows: Sequence[Sequence[int]],
    model_config: Any,
    *,
    pad_token_id: int,
    pixel_values_videos: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | Sequence[float] | None = None,
    video_rows: Sequence[Sequence[int]] | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    image_rows: Sequence[Sequence[int]] | None = None,
) -> ModelInput:
    """Left-pad token rows (vision blocks already expanded) and compute positions.

    Vision tensors list each distinct video/image once; `video_rows[b]` gives the
    videos of row b in order. When omitted, videos are taken in order, as many
    per row as the row has video blocks (the processor's batch order).
    """
    if not rows or any(len(r) == 0 for r in rows):
        raise ModelInputError("every prompt row needs at least one token")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r) :] = torch.as_tensor(list(r), dtype=torch.long)
        mask[b, width - len(r) :] = 1
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)

    if not is_mrope_model(model_config):
        if video_grid_thw is not None or image_grid_thw is not None:
            raise ModelInputError("vision inputs given for a text-only model")
        positions, deltas = text_position_ids(mask)
        return ModelInput(ids, mask, positions, deltas, lengths, width, pad_token_id)

    spec = MRopeSpec.from_config(model_config)
    if second_per_grid_ts is not None:
        second_per_grid_ts = torch.as_tensor(second_per_grid_ts, dtype=torch.float64)
    v_rows = _rows_or_in_order(ids, mask, spec, spec.video_token_id, video_grid_thw, video_rows)
    i_rows = _rows_or_in_order(ids, mask, spec, spec.image_token_id, image_grid_thw, image_rows)
    positions, deltas = mrope_position_ids(
        ids,
        mask,
        video_grid_thw=_in_row_order(video_grid_thw, v_rows),
        second_per_grid_ts=_in_row_order(second_per_grid_ts, v_rows),
        image_grid_thw=_in_row_order(image_grid_thw, i_rows),
        video_token_id=spec.video_token_id,
        image_token_id=spec.image_token_id,
        vision_start_token_id=spec.vision_start_token_id,
        spatial_merge_size=spec.spatial_merge_size,
        tokens_per_second=spec.tokens_per_second,
    )
    return ModelInput(
        ids,
        mask,
        positions,
        deltas,
        lengths,
        width,
        pad_token_id,
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=video_grid_thw,
        second_per_grid_ts=second_per_grid_ts,
        video_rows=v_rows,
        pixel_values=pixel_values,
        image_grid_thw=image_grid_thw,
        image_rows=i_rows,
    )


def _rows_or_in_order(ids, mask, spec, pad_id, grids, rows) -> tuple[tuple[int, ...], ...]:
    """Which vision items each row shows: given, or counted from the vision blocks."""
    if rows is not None:
        if len(rows) != ids.shape[0]:
            raise ModelInputError(f"{len(rows)} vision row lists for {ids.shape[0]} rows")
        return tuple(tuple(int(i) for i in r) for r in rows)
    # A block starts at a pad token right after <|vision_start|>.
    prev = torch.nn.functional.pad(ids[:, :-1], (1, 0), value=-1)
    starts = ((ids == pad_id) & (prev == spec.vision_start_token_id) & mask.bool()).sum(-1)
    out, nxt = [], 0
    for count in starts.tolist():
        out.append(tuple(range(nxt, nxt + count)))
        nxt += count
    available = 0 if grids is None else int(grids.shape[0])
    if nxt != available:
        raise ModelInputError(
            f"input_ids have {nxt} vision blocks (token id {pad_id}) but {available} grids given"
        )
    return tuple(out)


def render_prompt(
    prompt: Sample | Sequence[dict[str, Any]] | str,
    processor: Any,
    *,
    thinking: bool,
    system_prompt: str | None = None,
) -> str:
    """Prompt text through the chat template (a str is taken as already rendered)."""
    if isinstance(prompt, str):
        return prompt
    messages = (
        build_messages(prompt, thinking, system_prompt) if isinstance(prompt, Sample) else prompt
    )
    return processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def build_prompt_batch(
    prompts: Sequence[Sample | Sequence[dict[str, Any]] | str],
    videos: Sequence[Sequence[VideoClip]],
    processor: Any,
    model_config: Any,
    *,
    thinking: bool,
    system_prompt: str | None = None,
    images: Sequence[Sequence[Any]] | None = None,
) -> ModelInput:
    """Prompt batch: chat template, vision blocks expanded by the processor, left padding,
    positions by the reference rule.

    prompts[b] is a Sample (rendered with the thinking or non-thinking template),
    a list of chat messages, or an already rendered string; videos[b] are the
    decoded videos of prompt b, in the order of its video placeholders (images[b]
    likewise: uint8 [H, W, 3] arrays).
    """
    images = images if images is not None else [()] * len(prompts)
    if len(videos) != len(prompts) or len(images) != len(prompts):
        raise ModelInputError(
            f"{len(prompts)} prompts but {len(videos)} video lists and {len(images)} image lists"
        )
    texts = [
        render_prompt(p, processor, thinking=thinking, system_prompt=system_prompt) for p in prompts
    ]
    for b, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        where = (
            (prompt.source or prompt.problem_id) if isinstance(prompt, Sample) else f"prompt {b}"
        )
        for token, given, kind in (
            (processor.video_token, videos[b], "videos"),
            (processor.image_token, images[b], "images"),
        ):
            if text.count(token) != len(given):
                raise ModelInputError(
                    f"{where}: the rendered prompt has {text.count(token)} {token} placeholders "
                    f"but {len(given)} {kind} were given"
                )
    clips = [clip for row in videos for clip in row]
    pictures = [image for row in images for image in row]
    kwargs: dict[str, Any] = {}
    if clips:
        kwargs["videos"] = [clip.frames for clip in clips]
        kwargs["video_metadata"] = [
            {"fps": float(clip.fps), "total_num_frames": len(clip.frames)} for clip in clips
        ]
    if pictures:
        kwargs["images"] = pictures
    out = processor(text=texts, padding=False, **kwargs)
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        raise ModelInputError("the tokenizer has no pad token: set tokenizer.pad_token")
    vision: dict[str, Any] = {}
    if clips:
        vision.update(
            pixel_values_videos=torch.as_tensor(out["pixel_values_videos"]),
            video_grid_thw=torch.as_tensor(out["video_grid_thw"], dtype=torch.long),
            second_per_grid_ts=torch.as_tensor(out["second_per_grid_ts"], dtype=torch.float64),
            video_rows=_consecutive(len(row) for row in videos),
        )
    if pictures:
        vision.update(
            pixel_values=torch.as_tensor(out["pixel_values"]),
            image_grid_thw=torch.as_tensor(out["image_grid_thw"], dtype=torch.long),
            image_rows=_consecutive(len(row) for row in images),
        )
    rows = [list(r) for r in out["input_ids"]]
    return assemble_prompt_batch(rows, model_config, pad_token_id=pad_id, **vision)


def _consecutive(counts) -> list[tuple[int, ...]]:
    """[2, 0, 1] -> [(0, 1), (), (2,)]: items numbered in batch order."""
    out, nxt = [], 0
    for count in counts:
        out.append(tuple(range(nxt, nxt + count)))
        nxt += count
    return out


def append_responses(
    prompt: ModelInput,
    responses: Sequence[Sequence[int] | torch.Tensor] | torch.Tensor,
    prompt_index: Sequence[int] | torch.Tensor | None = None,
    response_mask: torch.Tensor | None = None,
) -> ModelInput:
    """Prompt + reply rows for log-prob and training passes.

    responses[i] is a reply to prompt row prompt_index[i] (default: row i), e.g.
    n replies per prompt with prompt_index = [0]*n + [1]*n + ... Replies are
    token lists, or a padded [N, T] tensor with `response_mask` (1 on each row's
    leading reply tokens, as a rollout returns them). Reply token k gets position
    prompt_length + k + rope_delta on every axis, as generation gives it.
    Replies are right padded; the result's response_mask marks their tokens.
    """
    if prompt.response_mask is not None:
        raise ModelInputError("append_responses takes a prompt-only ModelInput")
    replies = _reply_rows(responses, response_mask)
    index = list(range(len(replies))) if prompt_index is None else [int(i) for i in prompt_index]
    if len(index) != len(replies):
        raise ModelInputError(f"{len(replies)} replies but {len(index)} prompt indices")
    if any(i < 0 or i >= prompt.batch_size for i in index):
        raise ModelInputError(f"prompt_index out of range for {prompt.batch_size} prompts")
    width = max((len(r) for r in replies), default=0)
    rows = torch.tensor(index, dtype=torch.long)

    reply_ids = torch.full((len(replies), width), prompt.pad_token_id, dtype=torch.long)
    reply_mask = torch.zeros((len(replies), width), dtype=torch.long)
    for i, r in enumerate(replies):
        reply_ids[i, : len(r)] = r
        reply_mask[i, : len(r)] = 1
    device = prompt.input_ids.device
    rows, reply_ids, reply_mask = rows.to(device), reply_ids.to(device), reply_mask.to(device)

    lengths = prompt.prompt_lengths[rows]
    deltas = prompt.rope_deltas[rows]
    mrope = prompt.position_ids.ndim == 3
    reply_pos = continued_positions(deltas, lengths, width, axes=3 if mrope else 1)
    if mrope:
        reply_pos = reply_pos.masked_fill(reply_mask.unsqueeze(0) == 0, PAD_POSITION)
        positions = torch.cat([prompt.position_ids[:, rows], reply_pos], dim=2)
    else:
        reply_pos = reply_pos.masked_fill(reply_mask == 0, PAD_POSITION)
        positions = torch.cat([prompt.position_ids[rows], reply_pos], dim=1)
    response_mask = torch.cat(
        [reply_mask.new_zeros((len(replies), prompt.prompt_width)), reply_mask], dim=1
    )
    return replace(
        prompt,
        input_ids=torch.cat([prompt.input_ids[rows], reply_ids], dim=1),
        attention_mask=torch.cat([prompt.attention_mask[rows], reply_mask], dim=1),
        position_ids=positions,
        rope_deltas=deltas,
        prompt_lengths=lengths,
        response_mask=response_mask,
        video_rows=tuple(prompt.video_rows[i] for i in index) if prompt.video_rows else (),
        image_rows=tuple(prompt.image_rows[i] for i in index) if prompt.image_rows else (),
    )


def _reply_rows(responses, response_mask) -> list[torch.Tensor]:
    """Replies as a list of 1-D token tensors (padding removed)."""
    if response_mask is None:
        return [torch.as_tensor(r, dtype=torch.long).view(-1).cpu() for r in responses]
    if not isinstance(responses, torch.Tensor) or responses.shape != response_mask.shape:
        raise ModelInputError("response_mask needs a reply tensor of the same [N, T] shape")
    mask = response_mask.long().cpu()
    lengths = mask.sum(-1)
    steps = torch.arange(mask.shape[1]).view(1, -1)
    if not torch.equal(mask, (steps < lengths.view(-1, 1)).long()):
        raise ModelInputError("response_mask must be 1 on a prefix of each row (right padding)")
    return [row[:n] for row, n in zip(responses.long().cpu(), lengths.tolist(), strict=True)]


# --- running -------------------------------------------------------------------------


def compute_video_embeds(model: Any, model_input: ModelInput) -> tuple[torch.Tensor, ...]:
    """ViT embeddings of each distinct video of the batch ([tokens_i, hidden] each)."""
    if model_input.pixel_values_videos is None:
        raise ModelInputError("this ModelInput has no video pixels (pass video_embeds instead)")
    out = model.model.get_video_features(
        model_input.pixel_values_videos, model_input.video_grid_thw, return_dict=True
    )
    return tuple(out.pooler_output)


def compute_image_embeds(model: Any, model_input: ModelInput) -> tuple[torch.Tensor, ...]:
    """ViT embeddings of each distinct image of the batch."""
    if model_input.pixel_values is None:
        raise ModelInputError("this ModelInput has no image pixels (pass image_embeds instead)")
    out = model.model.get_image_features(
        model_input.pixel_values, model_input.image_grid_thw, return_dict=True
    )
    return tuple(out.pooler_output)


def _scatter_vision(
    embeds: torch.Tensor,
    is_pad: torch.Tensor,
    items: Sequence[torch.Tensor],
    grids: torch.Tensor,
    rows: Sequence[Sequence[int]],
    merge: int,
    kind: str,
) -> torch.Tensor:
    """Put each row's vision embeddings, in order, at its pad-token slots."""
    if len(items) != grids.shape[0]:
        raise ModelInputError(f"{len(items)} {kind} embeddings given for {grids.shape[0]} {kind}s")
    hidden = embeds.shape[-1]
    for j, (item, grid) in enumerate(zip(items, grids.tolist(), strict=True)):
        expected = grid[0] * grid[1] * grid[2] // (merge * merge)
        if item.ndim != 2 or item.shape[0] != expected or item.shape[1] != hidden:
            raise ModelInputError(
                f"{kind} {j}: embedding of shape {tuple(item.shape)}, expected "
                f"({expected}, {hidden}) for grid {grid}; stale cache entry or wrong video?"
            )
    pieces = []
    for b, row in enumerate(rows):
        slots = int(is_pad[b].sum())
        row_items = [items[j] for j in row]
        have = sum(int(t.shape[0]) for t in row_items)
        if have != slots:
            raise ModelInputError(
                f"row {b}: {slots} {kind} pad tokens but its {kind}s {list(row)} give {have} "
                "embeddings"
            )
        pieces.extend(row_items)
    if not pieces:
        return embeds
    source = torch.cat(pieces).to(embeds.device, embeds.dtype)
    return embeds.masked_scatter(is_pad.unsqueeze(-1), source)


def embed_inputs(
    model: Any,
    model_input: ModelInput,
    video_embeds: Sequence[torch.Tensor] | None = None,
    image_embeds: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """inputs_embeds [B, L, H]: token embeddings with vision embeddings at their pads.

    video_embeds: one [tokens_i, H] tensor per distinct video (e.g. from the
    embedding cache); computed with the model's ViT when None. A count that does
    not match the pad tokens raises ModelInputError.
    """
    embeds = model.get_input_embeddings()(model_input.input_ids)
    config = model.config
    if not is_mrope_model(config):
        return embeds
    spec = MRopeSpec.from_config(config)
    if model_input.video_grid_thw is not None:
        items = (
            video_embeds if video_embeds is not None else compute_video_embeds(model, model_input)
        )
        embeds = _scatter_vision(
            embeds,
            model_input.input_ids == spec.video_token_id,
            items,
            model_input.video_grid_thw,
            model_input.video_rows,
            spec.spatial_merge_size,
            "video",
        )
    elif video_embeds is not None:
        raise ModelInputError("video_embeds given for a batch without videos")
    if model_input.image_grid_thw is not None:
        items = (
            image_embeds if image_embeds is not None else compute_image_embeds(model, model_input)
        )
        embeds = _scatter_vision(
            embeds,
            model_input.input_ids == spec.image_token_id,
            items,
            model_input.image_grid_thw,
            model_input.image_rows,
            spec.spatial_merge_size,
            "image",
        )
    return embeds


def model_kwargs(
    model: Any,
    model_input: ModelInput,
    video_embeds: Sequence[torch.Tensor] | None = None,
    image_embeds: Sequence[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The keyword arguments every model call gets: embeddings, explicit positions, mask.

    Positions are always explicit: without them transformers recomputes 3-D
    positions by its own (5.x) rule, or falls back to 1-D ones for embeddings.
    """
    return {
        "inputs_embeds": embed_inputs(model, model_input, video_embeds, image_embeds),
        "position_ids": model_input.position_ids,
        "attention_mask": model_input.attention_mask,
    }


def forward_logits(
    model: Any,
    model_input: ModelInput,
    video_embeds: Sequence[torch.Tensor] | None = None,
    image_embeds: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits [B, L, vocab] of the model on this input."""
    out = model(**model_kwargs(model, model_input, video_embeds, image_embeds), use_cache=False)
    return out.logits
