"""What the vLLM backend sends and checks: pure functions, no vLLM import.

The engine receives the same `PromptBatch` as the built-in engine (token ids,
or embeddings with the video scattered at its placeholders, and the positions
training uses). vLLM is given an input that makes it see those same positions,
or the request is refused:

- 1-D RoPE (text) models: token ids, or `prompt_embeds`. vLLM numbers the
  prompt 0..n-1, so the given positions must be exactly that.
- M-RoPE (Qwen2.5-VL): token ids with one pad token per vision item, and the
  item's embeddings, grid and seconds per temporal patch through vLLM's
  multimodal path, which computes 3-D positions by the Qwen reference rule.
  vLLM's `prompt_embeds` path would use 1-D positions, so it is never used
  for these models.

Grids and seconds are read back from the positions themselves: a vision block
of grid (t, h, w) occupies t*(h/m)*(w/m) pad tokens whose height/width
positions span h/m and w/m values and whose temporal offsets are
trunc(k * interval), k = 0..t-1. The interval chosen reproduces those offsets
under vLLM's rule, and the whole row's positions are recomputed by vLLM's rule
and compared with training's before anything is sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from longrl.models.rope import MRopeSpec
from longrl.rollout.engine import RolloutOutput
from longrl.rollout.sampling import SamplingParams


class VllmUnsupportedError(ValueError):
    """vLLM would not reproduce training's log-probs for this input or setting."""


# --- log-probs --------------------------------------------------------------------------

# vLLM's `logprobs_mode` values this backend uses:
# raw_logprobs       log_softmax(logits)              (no temperature, no truncation)
# processed_logprobs log_softmax(truncate(logits / T)) (top-k/top-p renormalised)
# Training (and the built-in engine) use log_softmax(logits / T), T = 0 read as 1.
LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")


def _truncates(params: SamplingParams) -> bool:
    return params.top_p < 1.0 or params.top_k > 0


def matching_logprobs_modes(params: SamplingParams) -> tuple[str, ...]:
    """The vLLM log-prob modes whose values equal training's for these sampling settings."""
    if params.greedy:
        return LOGPROBS_MODES  # vLLM returns untempered, untruncated values for greedy
    modes = []
    if not _truncates(params):
        modes.append("processed_logprobs")
    if params.temperature == 1.0:
        modes.append("raw_logprobs")
    return tuple(modes)


def choose_logprobs_mode(params: SamplingParams) -> str:
    """The mode to start vLLM with for these settings; refuses settings no mode matches."""
    modes = matching_logprobs_modes(params)
    if not modes:
        raise VllmUnsupportedError(
            f"temperature={params.temperature} with top_p={params.top_p}/top_k={params.top_k}: "
            "vLLM returns either untempered log-probs or log-probs renormalised over the "
            "top-k/top-p set, and neither equals training's log_softmax(logits / temperature). "
            "Use temperature 1.0, or top_p=1.0 and top_k=-1, or worker.rollout.name=builtin."
        )
    return modes[0]


# --- vision items recovered from positions ----------------------------------------------


@dataclass(frozen=True)
class VisionItem:
    """One video/image block of a prompt row, as vLLM's multimodal path takes it."""

    kind: str  # "video" or "image"
    start: int  # index of the block's first pad token in the unpadded row
    grid_thw: tuple[int, int, int]  # patches, as the processor reports them
    time_interval: float  # position units per temporal patch (videos)

    def num_tokens(self, merge: int) -> int:
        t, h, w = self.grid_thw
        return t * (h // merge) * (w // merge)

    def seconds_per_grid_t(self, tokens_per_second: float) -> float:
        return self.time_interval / tokens_per_second


def interval_reproducing(offsets: Sequence[int]) -> float:
    """An interval f with trunc(k * f) == offsets[k] for every k (vLLM's temporal rule).

    Any f in the intersection of [d_k / k, (d_k + 1) / k) works; the middle is
    taken so float rounding on the way (seconds -> tokens_per_second) cannot
    cross an edge.
    """
    if not offsets or offsets[0] != 0:
        raise VllmUnsupportedError(f"temporal offsets {list(offsets)[:8]} do not start at 0")
    if len(offsets) == 1:
        return 1.0
    low = max(d / k for k, d in enumerate(offsets) if k > 0)
    high = min((d + 1) / k for k, d in enumerate(offsets) if k > 0)
    if not low < high:
        raise VllmUnsupportedError(
            f"temporal offsets {list(offsets)[:8]}... are not trunc(k * interval) for any "
            "interval: vLLM cannot reproduce these video positions"
        )
    return (low + high) / 2


def recover_vision_items(
    ids: Sequence[int], positions: torch.Tensor, spec: MRopeSpec
) -> list[VisionItem]:
    """The vision blocks of one unpadded row from its token ids and 3-D positions [3, n]."""
    merge = spec.spatial_merge_size
    kinds = {spec.video_token_id: "video", spec.image_token_id: "image"}
    items: list[VisionItem] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] not in kinds:
            i += 1
            continue
        j = i
        while j < n and ids[j] == ids[i]:
            j += 1
        block = positions[:, i:j]
        start = int(block[0, 0])
        rows = int(block[1].max()) - start + 1
        cols = int(block[2].max()) - start + 1
        per_t = rows * cols
        if per_t <= 0 or (j - i) % per_t:
            raise VllmUnsupportedError(
                f"{kinds[ids[i]]} block at token {i}: {j - i} tokens do not fill a "
                f"{rows}x{cols} grid; positions do not follow the M-RoPE layout"
            )
        t = (j - i) // per_t
        if kinds[ids[i]] == "image" and t != 1:
            raise VllmUnsupportedError(f"image block at token {i} spans {t} temporal patches")
        offsets = [int(block[0, k * per_t]) - start for k in range(t)]
        interval = 1.0 if kinds[ids[i]] == "image" else interval_reproducing(offsets)
        items.append(VisionItem(kinds[ids[i]], i, (t, rows * merge, cols * merge), interval))
        i = j
    return items


def vllm_row_positions(num_tokens: int, items: Sequence[VisionItem], spec: MRopeSpec):
    """The 3-D positions [3, n] vLLM computes for a row with these vision items.

    Mirrors vLLM's Qwen2.5-VL rule: text continues at max(previous positions) + 1;
    a block at s has temporal s + trunc(k * interval * 1.0) with the interval
    rebuilt from seconds per grid as vLLM does, height s + row, width s + column.
    """
    merge = spec.spatial_merge_size
    pieces: list[torch.Tensor] = []
    cursor, next_pos = 0, 0
    for item in sorted(items, key=lambda x: x.start):
        text = item.start - cursor
        pieces.append(torch.arange(next_pos, next_pos + text).expand(3, -1))
        next_pos += text
        t, h, w = item.grid_thw
        hm, wm = h // merge, w // merge
        factor = item.seconds_per_grid_t(spec.tokens_per_second) * spec.tokens_per_second
        temporal = [int(k * factor) if factor != 1.0 else k for k in range(t)]
        grid = torch.stack(
            [
                torch.tensor(temporal).view(t, 1, 1).expand(t, hm, wm),
                torch.arange(hm).view(1, hm, 1).expand(t, hm, wm),
                torch.arange(wm).view(1, 1, wm).expand(t, hm, wm),
            ]
        ).reshape(3, -1)
        block = grid + next_pos
        pieces.append(block)
        next_pos = int(block.max()) + 1
        cursor = item.start + item.num_tokens(merge)
    pieces.append(torch.arange(next_pos, next_pos + num_tokens - cursor).expand(3, -1))
    return torch.cat(pieces, dim=1).long()


def collapse_vision_blocks(
    ids: Sequence[int], items: Sequence[VisionItem], merge: int
) -> list[int]:
    """Token ids with each vision block reduced to its single pad token.

    vLLM expands a pad token into the item's tokens itself; an already
    expanded prompt would be expanded again (a longer, wrong prompt).
    """
    out: list[int] = []
    cursor = 0
    for item in sorted(items, key=lambda x: x.start):
        out.extend(ids[cursor : item.start + 1])
        cursor = item.start + item.num_tokens(merge)
    out.extend(ids[cursor:])
    return out


# --- one prompt row -> one vLLM request --------------------------------------------------


def check_plain_positions(positions: torch.Tensor, row: int) -> None:
    """vLLM numbers a text prompt 0..n-1 (on every axis); refuse anything else."""
    expected = torch.arange(positions.shape[-1], device=positions.device)
    if not bool((positions == expected).all()):
        raise VllmUnsupportedError(
            f"row {row}: prompt positions are not 0..{positions.shape[-1] - 1}; vLLM would "
            "number this prompt differently from training"
        )


def text_request(
    row: int,
    ids: torch.Tensor | None,
    embeds: torch.Tensor | None,
    positions: torch.Tensor,
) -> dict:
    """Request for a 1-D RoPE model: token ids, or prompt embeddings when given."""
    check_plain_positions(positions, row)
    if embeds is not None:
        return {"prompt_embeds": embeds}
    return {"prompt_token_ids": ids.tolist()}


def mrope_request(
    row: int,
    ids: torch.Tensor,
    embeds: torch.Tensor | None,
    positions: torch.Tensor,
    spec: MRopeSpec,
    token_embeds: torch.Tensor | None,
) -> tuple[dict, list[int]]:
    """Request for an M-RoPE model (and the full token ids vLLM must end up with).

    `token_embeds`: the model's own embeddings of `ids`; the given `embeds` must
    equal them at every text token, since vLLM embeds the text itself.
    """
    id_list = ids.tolist()
    items = recover_vision_items(id_list, positions, spec)
    expected = vllm_row_positions(len(id_list), items, spec)
    if not torch.equal(expected, positions.cpu().long()):
        raise VllmUnsupportedError(
            f"row {row}: vLLM's multimodal path would compute different 3-D positions than "
            "training's (e.g. vision blocks without <|vision_start|> or positions not by the "
            "Qwen reference rule)"
        )
    merge = spec.spatial_merge_size
    request: dict = {"prompt_token_ids": collapse_vision_blocks(id_list, items, merge)}
    if not items:
        return request, id_list
    if embeds is None:
        raise VllmUnsupportedError(
            f"row {row}: a prompt with vision tokens needs inputs_embeds (the cached video "
            "embeddings scattered at the pads); the vLLM backend does not run the ViT"
        )
    vision = torch.zeros(len(id_list), dtype=torch.bool)
    data: dict[str, dict] = {}
    for kind in ("video", "image"):
        chosen = [item for item in items if item.kind == kind]
        if not chosen:
            continue
        pieces = []
        for item in chosen:
            stop = item.start + item.num_tokens(merge)
            vision[item.start : stop] = True
            pieces.append(embeds[item.start : stop])
        entry = {
            f"{kind}_embeds": torch.cat(pieces),
            f"{kind}_grid_thw": torch.tensor([item.grid_thw for item in chosen]),
        }
        if kind == "video":
            entry["second_per_grid_ts"] = torch.tensor(
                [item.seconds_per_grid_t(spec.tokens_per_second) for item in chosen],
                dtype=torch.float64,
            )
        data[kind] = entry
    if token_embeds is not None:
        text = ~vision.to(embeds.device)
        if not torch.equal(embeds[text], token_embeds[text].to(embeds.dtype)):
            raise VllmUnsupportedError(
                f"row {row}: inputs_embeds differ from the model's token embeddings at text "
                "tokens; vLLM embeds text tokens itself, so it cannot reproduce them"
            )
    request["multi_modal_data"] = data
    return request, id_list


# --- vLLM outputs -> RolloutOutput ------------------------------------------------------


def assemble_output(
    samples: Sequence[Sequence[tuple[Sequence[int], Sequence[float]]]],
    *,
    n: int,
    pad_token_id: int,
    stop_token_ids: Sequence[int],
) -> RolloutOutput:
    """RolloutOutput from per-prompt lists of n (token ids, log-probs) samples."""
    rows = [sample for per_prompt in samples for sample in per_prompt]
    if any(len(per_prompt) != n for per_prompt in samples):
        raise ValueError(f"expected {n} samples per prompt, got {[len(s) for s in samples]}")
    width = max((len(tokens) for tokens, _ in rows), default=0)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    log_probs = torch.zeros((len(rows), width), dtype=torch.float32)
    finished = torch.zeros(len(rows), dtype=torch.bool)
    stops = set(stop_token_ids)
    for r, (tokens, values) in enumerate(rows):
        if len(values) != len(tokens):
            raise ValueError(f"sample {r}: {len(tokens)} tokens but {len(values)} log-probs")
        if any(not math.isfinite(v) for v in values):
            raise ValueError(f"sample {r}: non-finite log-prob from vLLM")
        ids[r, : len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
        mask[r, : len(tokens)] = 1
        log_probs[r, : len(tokens)] = torch.tensor(list(values), dtype=torch.float32)
        finished[r] = bool(tokens) and tokens[-1] in stops
    return RolloutOutput(
        response_ids=ids,
        response_mask=mask,
        log_probs=log_probs,
        prompt_index=torch.arange(len(rows)) // n,
        finished=finished,
    )
