"""From samples to an encoded prompt batch: decode, build, encode each video once.

Bad samples (a video that fails to decode, a prompt over the length limit) are
skipped with a logged reason and counted — never replaced by another sample's
data. The video embeddings computed here are reused by rollout and by every
later pass of the step (unless worker.actor.reuse_video_embeddings=false, the
ablation baseline that re-encodes in every pass).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.devices import module_device, to_device
from longrl.models.inputs import (
    ModelInput,
    VideoClip,
    build_prompt_batch,
    embed_inputs,
)
from longrl.parallel.fsdp import is_sharded
from longrl.rollout.engine import PromptBatch
from longrl.train.policy import Policy

logger = logging.getLogger("longrl.train")


@dataclass
class EncodedPrompts:
    samples: list[Sample]
    model_input: ModelInput
    video_embeds: tuple[torch.Tensor, ...] | None  # one per distinct video, no grad


def decode_clips(sample: Sample, data: DataConfig) -> list[VideoClip]:
    """Sampled frames of each video of `sample` (per-record fps/num_frames win)."""
    from longrl.video.decode import read_frames
    from longrl.vision.keys import effective_sampling

    sampling = effective_sampling(sample, data)
    return [
        VideoClip.from_decoded(read_frames(path, **sampling.read_frames_kwargs()))
        for path in sample.videos
    ]


def video_clips(sample: Sample, data: DataConfig) -> list:
    """Decoded clips; with data.cache_dir, keyed clips whose cache hits are not decoded."""
    if data.cache_dir is None:
        return decode_clips(sample, data)
    from longrl.vision.clips import keyed_clips

    return keyed_clips(sample, data)


def draw_decodable(
    next_sample: Callable[[], Sample],
    count: int,
    data: DataConfig,
    skipped: Counter,
    max_attempts: int | None = None,
) -> list[tuple[Sample, list[VideoClip]]]:
    """The next `count` samples whose videos decode; the others are skipped and counted."""
    from longrl.video.errors import VideoError
    from longrl.video.sampling import SamplingError

    drawn: list[tuple[Sample, list[VideoClip]]] = []
    attempts = 0
    limit = max_attempts or max(10 * count, 100)
    while len(drawn) < count:
        attempts += 1
        if attempts > limit:
            raise RuntimeError(
                f"{attempts - 1} samples drawn but only {len(drawn)} of {count} had decodable "
                f"videos; skipped so far: {dict(skipped)}. Check the dataset's videos."
            )
        sample = next_sample()
        try:
            drawn.append((sample, video_clips(sample, data)))
        except (VideoError, SamplingError) as err:  # a per-record fps/num_frames can be bad too
            if data.on_bad_sample == "raise":
                raise
            skipped["video_error" if isinstance(err, VideoError) else "bad_frame_request"] += 1
            logger.warning("skipping %s: %s", sample.source or sample.problem_id, err)
    return drawn


def encode_prompts(
    policy: Policy,
    drawn: Sequence[tuple[Sample, list[VideoClip]]],
    data: DataConfig,
    skipped: Counter,
) -> EncodedPrompts | None:
    """Build the prompt batch and encode each distinct video once (no grad), through the
    embedding cache when data.cache_dir is set."""
    kept = list(drawn)
    cached = _cached_encoder(policy, data) if data.cache_dir is not None else None
    while kept:
        samples, clips = [sample for sample, _ in kept], [clips for _, clips in kept]
        if cached is not None:
            model_input = cached.build(samples, clips, thinking=data.thinking)
        else:
            model_input = build_prompt_batch(
                samples, clips, policy.processor, policy.model.config, thinking=data.thinking
            )
        too_long = (
            (model_input.prompt_lengths > data.max_prompt_length).nonzero().flatten().tolist()
        )
        if not too_long:
            break
        for row in too_long:
            sample = kept[row][0]
            message = (
                f"{sample.source or sample.problem_id}: prompt of {int(model_input.prompt_lengths[row])} "
                f"tokens > data.max_prompt_length={data.max_prompt_length}"
            )
            if data.on_bad_sample == "raise" or not data.filter_overlong_prompts:
                raise ValueError(
                    message + " (lower data.max_frames / max_pixels or raise the limit)"
                )
            skipped["prompt_too_long"] += 1
            logger.warning("skipping %s", message)
        kept = [item for i, item in enumerate(kept) if i not in set(too_long)]
    if not kept:
        return None
    embeds = None
    if model_input.video_grid_thw is not None:
        with torch.no_grad():
            if cached is not None:
                embeds = cached.embeddings(model_input, [c for _, row in kept for c in row])
            else:
                embeds = tuple(e.detach() for e in policy.encode_videos(model_input))
    return EncodedPrompts([s for s, _ in kept], model_input, embeds)


def _embedding_cache(policy: Policy, data: DataConfig):
    from longrl.vision.cache import cache_for

    return cache_for(
        policy.model,
        data.cache_dir,
        memory_bytes=data.cache_memory_bytes,
        on_mismatch=data.cache_on_mismatch,
    )


def cache_metrics(policy: Policy, data: DataConfig) -> dict[str, float]:
    """This process's embedding-cache hits/misses/writes since the last call ({} uncached)."""
    if data.cache_dir is None:
        return {}
    return _embedding_cache(policy, data).take_stats()


def _cached_encoder(policy: Policy, data: DataConfig):
    from longrl.vision.cached_encoder import CachedVideoEncoder

    cache = _embedding_cache(policy, data)
    return CachedVideoEncoder(
        policy.model, policy.processor, cache, encode=policy.encode_videos, group=policy.sp_group
    )


def prompt_batch(
    model: torch.nn.Module,
    model_input: ModelInput,
    video_embeds: Sequence[torch.Tensor] | None,
) -> PromptBatch:
    """The engine/log-prob input: embeddings (vision scattered) + positions, in the caller's
    grad mode. With `video_embeds=None` and videos present, the ViT runs here.

    A sharded (FSDP) model always gets embeddings, text-only prompts too: every rank then
    runs the embedding before the model, so their all-gathers come in the same order
    whichever replica holds a video.

    The input (built on the CPU) and the embeddings go to `model`'s device here, right
    before the forward (`place_for_forward`)."""
    model_input, video_embeds = place_for_forward(model_input, video_embeds, module_device(model))
    no_vision = model_input.video_grid_thw is None and model_input.image_grid_thw is None
    if no_vision and not is_sharded(model):
        return PromptBatch(
            attention_mask=model_input.attention_mask,
            input_ids=model_input.input_ids,
            position_ids=model_input.position_ids,
        )
    return PromptBatch(
        attention_mask=model_input.attention_mask,
        input_ids=model_input.input_ids,
        inputs_embeds=embed_inputs(model, model_input, video_embeds),
        position_ids=model_input.position_ids,
    )


def place_for_forward(
    model_input: ModelInput,
    video_embeds: Sequence[torch.Tensor] | None,
    device: torch.device,
) -> tuple[ModelInput, tuple[torch.Tensor, ...] | None]:
    """The input and video embeddings of a forward, on `device` (no copy for what is there).

    Given embeddings take the place of the video pixels, which are left out: a long video's
    pixels are the largest tensor of a batch and the vision tower will not see them. Without
    embeddings the pixels go too, for the tower to encode them in the forward.
    """
    if video_embeds is not None and model_input.pixel_values_videos is not None:
        model_input = replace(model_input, pixel_values_videos=None)
    return to_device(model_input, device), to_device(video_embeds, device)
