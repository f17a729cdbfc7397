"""SFT forward passes: a micro-batch of (prompt, target) rows -> target logits.

Both layouts start from the one input builder (`batch_groups` ->
`append_responses`): same tokens, same video embeddings at the placeholders,
same 3-D positions as rollout and RL. They differ only in how rows are laid out:

padded   rows [pad | prompt | target | pad], length-bucketed by the caller so
         the padding is small. Attention mask 2-D.
packed   every real token of the micro-batch in one row, no padding. Each
         sample keeps its own positions; a leading row of per-sample text
         positions (0, 1, ... restarting at each sample) tells transformers
         where samples start, and it builds the block-diagonal causal mask
         (sdpa/eager) or uses varlen kernels (flash-attention) from it. This is
         transformers' documented packed format for Qwen-VL ([4, 1, N] positions,
         no attention mask).

Only the logits that predict target tokens are computed (`logits_to_keep`):
on a long video prompt, logits over every position would dwarf the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from longrl.models.inputs import ModelInput, append_responses, embed_inputs, model_kwargs
from longrl.train.groups import Group, batch_groups
from longrl.train.policy import Policy
from longrl.train.prompts import place_for_forward


@dataclass
class TargetLogits:
    logits: torch.Tensor  # [K, vocab]: one row per target token
    labels: torch.Tensor  # [K]: the target tokens they predict
    real_tokens: int  # prompt + target tokens the forward ran on (no padding)
    padding_tokens: int  # pad slots the forward ran on


def micro_batch_input(
    groups: Sequence[Group], policy: Policy
) -> tuple[ModelInput, tuple[torch.Tensor, ...] | None]:
    """Prompt + target rows of these samples, and the video embeddings to reuse, on the
    policy's device (built on the CPU, moved here).

    With a trainable vision tower the embeddings are None: the ViT reruns on the
    micro-batch's pixels inside the forward, with gradients.
    """
    chunk = batch_groups(groups, policy.model.config, policy.pad_token_id)
    model_input = append_responses(
        chunk.prompt, chunk.response_ids, response_mask=chunk.response_mask
    )
    embeds = None if policy.vision_trainable else chunk.video_embeds
    return place_for_forward(model_input, embeds, policy.device)


def padded_target_logits(
    model: torch.nn.Module, model_input: ModelInput, video_embeds
) -> TargetLogits:
    """Target logits of left-padded prompts + right-padded targets."""
    start = model_input.prompt_width  # first target column (all prompts end just before)
    width = model_input.input_ids.shape[1]
    keep = torch.arange(start - 1, width - 1, device=model_input.input_ids.device)
    out = model(
        **model_kwargs(model, model_input, video_embeds), use_cache=False, logits_to_keep=keep
    )
    mask = model_input.response_mask[:, start:].bool()
    real = int(model_input.attention_mask.sum())
    return TargetLogits(
        logits=out.logits[mask],
        labels=model_input.input_ids[:, start:][mask],
        real_tokens=real,
        padding_tokens=model_input.attention_mask.numel() - real,
    )


def packed_positions(model_input: ModelInput) -> torch.Tensor:
    """Positions of the real tokens, row after row: [4, 1, N] (M-RoPE) or [1, N] (1-D).

    The M-RoPE rows are the builder's positions unchanged; the extra first row
    counts 0, 1, ... within each sample, which only marks sample boundaries.
    """
    real = model_input.attention_mask.bool()
    per_sample = (real.long().cumsum(-1) - 1)[real]
    if model_input.position_ids.ndim == 2:
        # Text-only models: the builder's positions already count 0, 1, ... per row.
        return model_input.position_ids[real].unsqueeze(0)
    rope = model_input.position_ids[:, real]
    return torch.cat([per_sample.unsqueeze(0), rope]).unsqueeze(1)


def packed_target_logits(
    model: torch.nn.Module, model_input: ModelInput, video_embeds
) -> TargetLogits:
    """Target logits with the micro-batch packed into one padding-free row."""
    real = model_input.attention_mask.bool()
    embeds = embed_inputs(model, model_input, video_embeds)[real].unsqueeze(0)
    is_target = model_input.response_mask[real].bool()
    # A sample starts with prompt tokens, so token j-1 of a target token j is its own sample's.
    keep = is_target.nonzero().flatten() - 1
    out = model(
        inputs_embeds=embeds,
        position_ids=packed_positions(model_input),
        attention_mask=None,
        use_cache=False,
        logits_to_keep=keep,
    )
    return TargetLogits(
        logits=out.logits[0],
        labels=model_input.input_ids[real][is_target],
        real_tokens=int(real.sum()),
        padding_tokens=0,
    )


def target_logits(
    model: torch.nn.Module, model_input: ModelInput, video_embeds, *, packing: bool
) -> TargetLogits:
    forward = packed_target_logits if packing else padded_target_logits
    return forward(model, model_input, video_embeds)
