"""The prompt batch from video grids alone: what the cache path builds, hit or miss.

A prompt needs, per video, only its grid (how many `<|video_pad|>` tokens, and
their 3-D positions) and second_per_grid_t (temporal positions), not its pixels.
With the embedding cache on, every prompt is built here, whether its videos were
decoded or not, so a hit and a miss give the same sequence. The steps are those
of `models.inputs.build_prompt_batch`, with the processor's own pieces: the chat
template (`render_prompt`), the placeholder expansion (`replace_video_token`,
`get_text_with_replacements`), the tokenisation (the processor on text only), and
`assemble_prompt_batch` for padding and positions. The tests check it gives the
same ids, positions, grids and second_per_grid_ts as `build_prompt_batch` does
from the decoded frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from longrl.data.sample import Sample
from longrl.models.inputs import ModelInput, assemble_prompt_batch, render_prompt
from longrl.models.rope import ModelInputError


def build_prompt_batch_from_grids(
    prompts: Sequence[Sample | Sequence[dict[str, Any]] | str],
    video_grids: Sequence[Sequence[Sequence[int]]],
    second_per_grid_ts: Sequence[Sequence[float]],
    processor: Any,
    model_config: Any,
    *,
    thinking: bool,
    system_prompt: str | None = None,
) -> ModelInput:
    """Prompt batch (no pixels) for videos given by grid (t, h, w) and second_per_grid_t;
    video_grids[b] lists the grids of prompt b's videos in placeholder order."""
    if not (len(prompts) == len(video_grids) == len(second_per_grid_ts)):
        raise ModelInputError(
            f"{len(prompts)} prompts but {len(video_grids)} grid lists and "
            f"{len(second_per_grid_ts)} second_per_grid_ts lists"
        )
    texts = [
        render_prompt(p, processor, thinking=thinking, system_prompt=system_prompt) for p in prompts
    ]
    for b, (prompt, text, grids, seconds) in enumerate(
        zip(prompts, texts, video_grids, second_per_grid_ts, strict=True)
    ):
        where = (
            (prompt.source or prompt.problem_id) if isinstance(prompt, Sample) else f"prompt {b}"
        )
        placeholders = text.count(processor.video_token)
        if placeholders != len(grids) or len(seconds) != len(grids):
            raise ModelInputError(
                f"{where}: the rendered prompt has {placeholders} {processor.video_token} "
                f"placeholders but {len(grids)} video grids and {len(seconds)} "
                "second_per_grid_ts were given"
            )
    flat_grids = [tuple(int(v) for v in grid) for row in video_grids for grid in row]
    vision: dict[str, Any] = {}
    if flat_grids:
        grid_tensor = torch.tensor(flat_grids, dtype=torch.long)
        replacements = [
            processor.replace_video_token({"video_grid_thw": grid_tensor}, video_idx=i)
            for i in range(len(flat_grids))
        ]
        texts, _ = processor.get_text_with_replacements(texts, videos_replacements=replacements)
        rows_of_videos, nxt = [], 0
        for grids in video_grids:
            rows_of_videos.append(tuple(range(nxt, nxt + len(grids))))
            nxt += len(grids)
        vision = dict(
            video_grid_thw=grid_tensor,
            second_per_grid_ts=torch.tensor(
                [float(s) for row in second_per_grid_ts for s in row], dtype=torch.float64
            ),
            video_rows=rows_of_videos,
        )
    out = processor(text=texts, padding=False)
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        raise ModelInputError("the tokenizer has no pad token: set tokenizer.pad_token")
    rows = [list(r) for r in out["input_ids"]]
    return assemble_prompt_batch(rows, model_config, pad_token_id=pad_id, **vision)
