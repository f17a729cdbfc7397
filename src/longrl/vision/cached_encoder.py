"""One step's prompts and video embeddings through the embedding cache.

`build` makes the prompt batch from each clip's grid (no pixels needed, so a
cache hit is never decoded). `embeddings` looks every video up (memory, then
disk, validated), runs the misses through the vision tower in one call (each
distinct entry once, in order of first appearance, decoding the ones that were
not decoded), stores them, and returns one embedding per video of the batch.

Ranks that encode together (frames split over a sequence-parallel group) hold
the same batch but look the cache up on their own, and another rank's write can
land between two lookups. They agree before encoding: a video counts as a hit
only if it is one on every rank of the group (`agree_on_hits`, an all-reduce
MIN), so all ranks take the same branch around the collective encode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from longrl.data.sample import Sample
from longrl.models.inputs import ModelInput, compute_video_embeds
from longrl.models.preprocess import second_per_grid_t, video_grid_thw
from longrl.models.rope import ModelInputError
from longrl.vision.cache import EmbeddingCache, Expected, entry_problems, require_frozen
from longrl.vision.clips import KeyedClip
from longrl.vision.keys import entry_key, preprocess_fingerprint, vision_fingerprint
from longrl.vision.prompt_batch import build_prompt_batch_from_grids
from longrl.vision.store import CacheEntry, ClipInfo

Encode = Callable[[ModelInput], Sequence[torch.Tensor]]


def agree_on_hits(hits: list[bool], group: Any, device: torch.device) -> list[bool]:
    """Hits on every rank of `group` (None or one rank: unchanged)."""
    if group is None or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return hits
    flags = torch.tensor(hits, dtype=torch.int32, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN, group=group)
    return [bool(f) for f in flags.tolist()]


class CachedVideoEncoder:
    """`encode(model_input)` runs the vision tower on the input's pixels (default: one
    `compute_video_embeds` call); `group` is the set of ranks that encode together."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        cache: EmbeddingCache,
        *,
        encode: Encode | None = None,
        group: Any = None,
    ) -> None:
        visual = getattr(getattr(model, "model", None), "visual", None)
        require_frozen(visual)
        self.model, self.processor, self.cache = model, processor, cache
        self._encode_input = encode or (
            lambda model_input: compute_video_embeds(model, model_input)
        )
        self._group = group
        self.preprocess = processor.video_processor.config
        self._preprocess_fp = preprocess_fingerprint(self.preprocess)
        self._vision_fp = vision_fingerprint(visual, model.config.vision_config)
        self._hidden = model.get_input_embeddings().embedding_dim
        self._dtype = next(visual.parameters()).dtype

    def expected(self, clip: KeyedClip) -> Expected:
        return self.expected_for(clip.clip_key, clip.info)

    def expected_for(self, clip_key: str, info: ClipInfo) -> Expected:
        """What the entry of these frames must hold for this model and preprocessing."""
        cfg = self.preprocess
        return Expected(
            key=entry_key(clip_key, self._preprocess_fp, self._vision_fp),
            clip_key=clip_key,
            clip=info,
            grid_thw=video_grid_thw(info.num_frames, info.height, info.width, cfg),
            second_per_grid_t=second_per_grid_t(info.fps, cfg),
            hidden=self._hidden,
            dtype=self._dtype,
            merge_size=cfg.merge_size,
        )

    def build(
        self,
        samples: Sequence[Sample],
        clips: Sequence[Sequence[KeyedClip]],
        *,
        thinking: bool,
        system_prompt: str | None = None,
    ) -> ModelInput:
        expected = [[self.expected(clip) for clip in row] for row in clips]
        return build_prompt_batch_from_grids(
            samples,
            [[e.grid_thw for e in row] for row in expected],
            [[e.second_per_grid_t for e in row] for row in expected],
            self.processor,
            self.model.config,
            thinking=thinking,
            system_prompt=system_prompt,
        )

    def embeddings(
        self, model_input: ModelInput, clips: Sequence[KeyedClip]
    ) -> tuple[torch.Tensor, ...]:
        """One [tokens, hidden] embedding per clip, in the batch's video order."""
        expected = [self.expected(clip) for clip in clips]
        distinct: dict[str, tuple[KeyedClip, Expected]] = {}
        for clip, want in zip(clips, expected, strict=True):
            distinct.setdefault(want.key, (clip, want))
        entries = {key: self.cache.get(want) for key, (_, want) in distinct.items()}
        device = self.model.get_input_embeddings().weight.device
        hits = agree_on_hits([e is not None for e in entries.values()], self._group, device)
        found = {
            key: entry.embeds
            for (key, entry), hit in zip(entries.items(), hits, strict=True)
            if hit
        }
        misses = [item for key, item in distinct.items() if key not in found]
        if misses:
            found.update(self._encode(model_input, misses))
        return tuple(found[want.key].to(device) for want in expected)

    def _encode(
        self, model_input: ModelInput, misses: list[tuple[KeyedClip, Expected]]
    ) -> dict[str, torch.Tensor]:
        clips = [clip.with_frames() for clip, _ in misses]
        pixels = self.processor.video_processor(videos=[clip.frames for clip in clips])
        grids = torch.as_tensor(pixels["video_grid_thw"], dtype=torch.long)
        for clip, (_, want), grid in zip(clips, misses, grids.tolist(), strict=True):
            if tuple(grid) != want.grid_thw:
                raise ModelInputError(
                    f"{clip.path}: preprocessing gave grid {grid} but the prompt was built "
                    f"for {list(want.grid_thw)}"
                )
        device = self.model.get_input_embeddings().weight.device
        with torch.no_grad():
            embeds = self._encode_input(
                replace(
                    model_input,
                    pixel_values_videos=torch.as_tensor(pixels["pixel_values_videos"]).to(device),
                    video_grid_thw=grids.to(device),
                ),
            )
        out = {}
        for clip, (_, want), embed in zip(clips, misses, embeds, strict=True):
            embed = embed.detach()
            entry = CacheEntry(
                key=want.key,
                clip_key=want.clip_key,
                clip=clip.info,
                grid_thw=want.grid_thw,
                second_per_grid_t=want.second_per_grid_t,
                embeds=embed.to("cpu"),
                timestamps=torch.tensor(clip.timestamps, dtype=torch.float64),
                frame_indices=torch.tensor(clip.indices, dtype=torch.int64),
                source=clip.path,
            )
            problems = entry_problems(entry, want)
            if problems:  # the ViT itself disagrees with the prompt: a bug, never stored
                raise ModelInputError(f"{clip.path}: fresh embedding {'; '.join(problems)}")
            self.cache.put(entry)
            out[want.key] = embed
        return out
