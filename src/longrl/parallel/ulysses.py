"""Ulysses sequence-parallel attention, plugged in through transformers' attention interface.

Registered as `"longrl_ulysses"` in `transformers.AttentionInterface` (and its mask
function as the SDPA one in `AttentionMaskInterface`); `enable_ulysses(model)` sets
it as the language model's attention implementation. No modeling code is copied
or patched: the model runs its own projections, rotary (on this rank's positions)
and KV-cache update, then calls `ulysses_attention`, which

  1. all-to-alls query/key/value from [local sequence, all heads] to
     [full sequence, head shard] (keys/values include the cached past),
  2. runs standard SDPA with the full-sequence mask (see `sequence_layout.full_attention_mask`),
  3. all-to-alls the output back to [local sequence, all heads].

Decode steps (no gradients, fewer new tokens than ranks) take a second path: the
few new tokens are the same on every rank, so each rank attends with all heads
over the keys it holds and the ranks combine their partial softmaxes (a max and
a sum all-reduce of [B, H, tokens, D]). The cache is never moved: an all-to-all
of the whole cache per layer per generated token would cost far more than the step.

The per-call state (process group and prebuilt mask) arrives as the keyword
argument `longrl_sequence_parallel`, which transformers passes unchanged from
`model(...)` to the attention function. Without it (a plain `model(...)` call, or
the vision tower) the function is transformers' SDPA with the model's own mask,
so enabling Ulysses never changes a non-sequence-parallel forward.

Grouped-query attention: rank r gets query heads [r*H/sp, (r+1)*H/sp) and the kv
heads they read. When sp does not divide the kv heads (2 kv heads, sp=4), each kv
head is repeated sp/gcd(kv, sp) times before the all-to-all, so every rank
receives the kv heads of its query heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from longrl.models.attention_hooks import register_attention, with_sdpa_fallback
from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.sequence import group_size, heads_to_seq, seq_to_heads

ATTENTION_NAME = "longrl_ulysses"
STATE_KWARG = "longrl_sequence_parallel"


@dataclass(frozen=True)
class UlyssesCall:
    """What every attention layer of one forward call shares: group, mask, which path."""

    group: dist.ProcessGroup | None
    # bool [B, 1, queries, keys]: sharded call: padded queries x all keys in all-to-all
    # order; replicated call: the new tokens x this rank's stored keys. None: plain
    # causal attention after the first `causal_after` (pad) positions, which SDPA's
    # is_causal kernel does without a mask (about 3x faster on CPU at 8k tokens).
    mask: torch.Tensor | None
    replicated: bool = False
    causal_after: int = 0


def kv_replication(num_kv_heads: int, sp: int) -> int:
    """How many times each kv head is repeated so that sp divides the kv heads."""
    return sp // math.gcd(num_kv_heads, sp)


def check_heads(num_heads: int, num_kv_heads: int, sp: int) -> None:
    """Raise ParallelConfigError unless Ulysses can split these heads over sp ranks."""
    if num_heads % sp:
        raise ParallelConfigError(
            f"Ulysses sequence parallelism splits attention heads across ranks: "
            f"num_attention_heads={num_heads} is not divisible by sp={sp}; "
            f"choose sp among the divisors of {num_heads}"
        )
    if num_heads % num_kv_heads:
        raise ParallelConfigError(
            f"num_attention_heads={num_heads} is not a multiple of num_key_value_heads={num_kv_heads}"
        )


@with_sdpa_fallback(STATE_KWARG)
def ulysses_attention(
    call: UlyssesCall,
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
    scaling: float | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """An `AttentionInterface` function: [B, H, S_local, D] in, [B, S_local, H, D] out."""
    if kwargs.get("sliding_window") is not None:
        raise ParallelConfigError(
            "Ulysses attention does not implement sliding-window layers; "
            "disable use_sliding_window in the model config"
        )
    if call.replicated:
        return _replicated_attention(query, key, value, call, scaling), None
    sp = group_size(call.group)
    num_heads, num_kv_heads = query.shape[1], key.shape[1]
    check_heads(num_heads, num_kv_heads, sp)
    repeat = kv_replication(num_kv_heads, sp)
    if repeat > 1:
        key = key.repeat_interleave(repeat, dim=1)
        value = value.repeat_interleave(repeat, dim=1)

    query = seq_to_heads(query, call.group)
    key = seq_to_heads(key, call.group)
    value = seq_to_heads(value, call.group)
    group_heads = query.shape[1] // key.shape[1]
    if group_heads > 1:
        key = key.repeat_interleave(group_heads, dim=1)
        value = value.repeat_interleave(group_heads, dim=1)
    dropout = dropout if module.training else 0.0
    if call.mask is None:
        out = _causal_attention(query, key, value, call.causal_after, dropout, scaling)
    else:
        if call.mask.shape[-2:] != (query.shape[2], key.shape[2]):
            raise RuntimeError(
                f"sequence-parallel mask {tuple(call.mask.shape)} does not fit {query.shape[2]} "
                f"queries x {key.shape[2]} keys: the KV cache and its SequenceLayout disagree"
            )
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=call.mask, dropout_p=dropout, scale=scaling
        )
    out = heads_to_seq(out, call.group)
    return out.transpose(1, 2).contiguous(), None


def _causal_attention(query, key, value, skip: int, dropout: float, scaling) -> torch.Tensor:
    """Causal SDPA over positions >= skip (queries and keys in sequence order); 0 before."""
    if query.shape[2] != key.shape[2]:
        raise RuntimeError("causal fast path needs as many keys as queries (one call, no cache)")
    out = torch.nn.functional.scaled_dot_product_attention(
        query[:, :, skip:],
        key[:, :, skip:],
        value[:, :, skip:],
        is_causal=True,
        dropout_p=dropout,
        scale=scaling,
    )
    return torch.nn.functional.pad(out, (0, 0, skip, 0))


def _replicated_attention(query, key, value, call: UlyssesCall, scaling) -> torch.Tensor:
    """Softmax attention over keys spread across ranks, for queries every rank holds.

    Each rank scores its own keys; the global row max and the sums of
    exp(score - max) and exp(score - max) @ value are all-reduced, which is the
    softmax over all keys. Rows with no visible key anywhere (pad queries) give 0.
    No autograd (decode runs without gradients).
    """
    if torch.is_grad_enabled() and query.requires_grad:
        raise RuntimeError("replicated-query attention is for decoding without gradients")
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query.float() @ key.float().transpose(-1, -2)) * scale
    scores = scores.masked_fill(~call.mask, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=call.group)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    weights = torch.exp(scores - row_max)
    sums = torch.cat([weights @ value.float(), weights.sum(dim=-1, keepdim=True)], dim=-1)
    dist.all_reduce(sums, group=call.group)
    out = sums[..., :-1] / sums[..., -1:].clamp_min(torch.finfo(torch.float32).tiny)
    return out.to(query.dtype).transpose(1, 2).contiguous()


def register_ulysses() -> None:
    """Register the attention function and its mask builder with transformers (idempotent)."""
    register_attention(ATTENTION_NAME, ulysses_attention)


def text_config(model: torch.nn.Module):
    """The language model's config (Qwen2.5-VL keeps it under `text_config`)."""
    config = model.config
    return getattr(config, "text_config", None) or config


def enable_ulysses(model: torch.nn.Module) -> None:
    """Make the language model's attention layers call `ulysses_attention`; vision is untouched."""
    register_ulysses()
    if "text_config" in getattr(model.config, "sub_configs", {}):
        model.set_attn_implementation({"text_config": ATTENTION_NAME})
    else:
        model.set_attn_implementation(ATTENTION_NAME)
    if text_config(model)._attn_implementation != ATTENTION_NAME:
        raise ParallelConfigError(
            f"{type(model).__name__} did not accept attn_implementation={ATTENTION_NAME!r}; "
            "Ulysses needs a model that dispatches through transformers' AttentionInterface"
        )
