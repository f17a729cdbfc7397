"""Shared-prefix ("cascade") attention for decoding a group of samples from one prompt.

The n samples of a group share the prompt's keys and values. Repeating the
prompt's KV cache n ways (`DynamicCache.batch_repeat_interleave`) makes every
decode step copy and read n copies of it: each step's cache update concatenates
the whole cache again, and attention reads n x prompt keys per layer. Here the
prompt's cache is kept once per group and each decode step's attention is split
in two exact parts, merged by their log-sum-exps:

  prefix: the group's queries (n samples x query heads of one kv head) attend to the
          prompt's keys in one matrix product per (group, kv head): the prompt is
          read once per group, never copied;
  own:    each sample attends to its own generated tokens (the model's ordinary
          DynamicCache, which now holds only those).

  out = (out_prefix * exp(lse_prefix) + out_own * exp(lse_own)) / exp(lse),
  lse = logaddexp(lse_prefix, lse_own)

which is softmax attention over [prompt ; own tokens], i.e. what the repeated cache
computes, up to float summation order (greedy tokens identical and log-probs to
1e-5 in tests/unit/test_prefix_attention.py).

Plugged in through transformers' attention interface as `"longrl_prefix_shared"`;
`attend_with_shared_prefix(model)` switches the language model to it for the decode loop
only and restores the previous implementation after. The per-call state arrives
as the keyword argument `longrl_shared_prefix` (transformers passes it unchanged
from `model(...)` to the attention function); without it the function is
transformers' SDPA, so a call without the state computes what SDPA does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from longrl.models.attention_hooks import register_attention, with_sdpa_fallback

ATTENTION_NAME = "longrl_prefix_shared"
STATE_KWARG = "longrl_shared_prefix"
# Attention implementations the shared-prefix path may stand in for (same math).
_REPLACEABLE = ("sdpa", "eager")
# Score elements (fp32) per block of prompt keys: bounds the transient memory.
_BLOCK_ELEMENTS = 1 << 24


@dataclass
class SharedPrefix:
    """The prompts' keys/values, once per group, and which rows are still decoding.

    keys/values: per layer [B, kv_heads, P, head_dim]; mask: [B, P] bool (True on real
    prompt tokens); rows: the ids (0..B*n-1, ascending, rows grouped by prompt) of the
    rows in the current batch, or None when all B*n rows are present.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    n: int
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.dense = bool(self.mask.all())  # no prompt padding: no mask to apply

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep rows `keep` (indices into the current batch), as `batch_select_indices`."""
        rows = self.rows
        if rows is None:
            rows = torch.arange(self.mask.shape[0] * self.n, device=keep.device)
        self.rows = rows[keep]

    def attend(
        self, layer: int, query: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of `query` [R, H, q, D] to the prompt keys of each row's group.

        Returns out [R, H, q, D] (fp32) and lse [R, H, q] (fp32)."""
        keys, values = self.keys[layer], self.values[layer]
        groups, kv_heads, prompt_len, head_dim = keys.shape
        rows, heads, q_len, _ = query.shape
        n = self.n
        full_rows = groups * n
        if self.rows is not None and rows != full_rows:
            padded = query.new_zeros(full_rows, heads, q_len, head_dim)
            padded[self.rows] = query
            query = padded
        per_kv = heads // kv_heads
        width = n * per_kv * q_len
        # [B*n, H, q, D] -> [B, kv, n*per_kv*q, D]: a group's queries of one kv head, stacked.
        grouped = (
            query.view(groups, n, kv_heads, per_kv, q_len, head_dim)
            .transpose(1, 2)
            .reshape(groups, kv_heads, width, head_dim)
        )
        block = max(256, _BLOCK_ELEMENTS // max(1, groups * kv_heads * width))
        out = lse = None
        for start in range(0, prompt_len, block):
            stop = min(prompt_len, start + block)
            visible = None if self.dense else self.mask[:, None, None, start:stop]
            part_out, part_lse = _softmax_attention(
                grouped, keys[:, :, start:stop], values[:, :, start:stop], visible, scale
            )
            out, lse = (part_out, part_lse) if out is None else merge(out, lse, part_out, part_lse)
        out = (
            out.view(groups, kv_heads, n, per_kv, q_len, head_dim)
            .transpose(1, 2)
            .reshape(full_rows, heads, q_len, head_dim)
        )
        lse = (
            lse.view(groups, kv_heads, n, per_kv, q_len)
            .transpose(1, 2)
            .reshape(full_rows, heads, q_len)
        )
        if self.rows is not None and rows != full_rows:
            out, lse = out[self.rows], lse[self.rows]
        return out, lse


def _softmax_attention(query, key, value, visible, scale):
    """Softmax attention [.., M, D] x [.., S, D], optional bool mask broadcast to [.., M, S].

    Returns out (fp32) and the log-sum-exp of the scores; rows that see no key give
    out 0 and lse -inf (they merge away). No autograd: decoding only."""
    scores = torch.matmul(query, key.transpose(-1, -2)).float().mul_(scale)
    if visible is not None:
        scores.masked_fill_(~visible, float("-inf"))
    return _normalise(scores, value, scores.shape)


def _normalise(scores, value, shape):
    """exp-normalise `scores` [..., S] in place; (weights @ value, lse) with `shape` for the
    matrix product (scores viewed as [.., M, S])."""
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = scores.sub_(top).exp_()
    total = weights.sum(dim=-1)
    lse = top.squeeze(-1) + torch.log(total)
    out = torch.matmul(weights.view(shape).to(value.dtype), value).float()
    denominator = total.clamp_min(torch.finfo(torch.float32).tiny).view(*shape[:-1], 1)
    return out.div_(denominator), lse


def merge(out_a, lse_a, out_b, lse_b):
    """Combine two softmax attentions over disjoint key sets into the one over their union."""
    lse = torch.logaddexp(lse_a, lse_b)
    finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = (
        out_a * torch.exp(lse_a - finite)[..., None] + out_b * torch.exp(lse_b - finite)[..., None]
    )
    return out, lse


def _own_attention(query, key, value, attention_mask, scale):
    """Each row's queries [R, H, q, D] against its own keys [R, kv, s, D]; out, lse fp32."""
    rows, heads, q_len, head_dim = query.shape
    kv_heads, keys_len = key.shape[1], key.shape[2]
    per_kv = heads // kv_heads
    grouped = query.reshape(rows, kv_heads, per_kv * q_len, head_dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float().mul_(scale)
    scores = scores.view(rows, kv_heads, per_kv, q_len, keys_len)
    if attention_mask is None:
        if q_len > 1:  # causal; the queries are the last q_len keys
            offset = keys_len - q_len
            q_pos = torch.arange(q_len, device=query.device)[:, None] + offset
            k_pos = torch.arange(keys_len, device=query.device)[None, :]
            scores.masked_fill_(k_pos > q_pos, float("-inf"))
    else:
        mask = attention_mask[:, :, None, :, -keys_len:]  # [R|1, 1|H, 1, q, s]
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, float("-inf"))
        else:
            scores.add_(mask.float())
    out, lse = _normalise(scores, value, (rows, kv_heads, per_kv * q_len, keys_len))
    return out.view(rows, heads, q_len, head_dim), lse.view(rows, heads, q_len)


@with_sdpa_fallback(STATE_KWARG)
def prefix_shared_attention(
    prefix: SharedPrefix,
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
    scaling: float | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """An `AttentionInterface` function: [R, H, q, D] in, [R, q, H, D] out."""
    if torch.is_grad_enabled() and query.requires_grad:
        raise RuntimeError("shared-prefix attention is for decoding without gradients")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out_prefix, lse_prefix = prefix.attend(module.layer_idx, query, scale)
    out_own, lse_own = _own_attention(query, key, value, attention_mask, scale)
    out, _ = merge(out_prefix, lse_prefix, out_own, lse_own)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def register_prefix_attention() -> None:
    """Register the attention function and its mask builder (SDPA's) with transformers."""
    register_attention(ATTENTION_NAME, prefix_shared_attention)


def _text_config(model: torch.nn.Module):
    config = getattr(model, "config", None)
    return getattr(config, "text_config", None) or config


def supports_prefix_attention(model: torch.nn.Module) -> bool:
    """Whether `model` is a transformers model whose language model attends with SDPA or
    eager attention over full (not sliding-window) layers, without attention dropout:
    then the shared-prefix path computes the same attention. Wrappers (sequence
    parallelism) and other kernels: no."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    config = _text_config(model)
    if not isinstance(model, PreTrainedModel) or config is None:
        return False
    if getattr(config, "_attn_implementation", None) not in (*_REPLACEABLE, ATTENTION_NAME):
        return False
    if model.training and getattr(config, "attention_dropout", 0.0):
        return False  # attention dropout is not applied on this path
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in layer_types)


def shared_prefix_from_cache(cache, prompt_mask: torch.Tensor, n: int) -> SharedPrefix | None:
    """The prompt keys/values of a prefill's DynamicCache, or None for another cache type."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache:
        return None
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    keys = [layer.keys for layer in layers]
    values = [layer.values for layer in layers]
    if any(k is None or k.dim() != 4 for k in keys):
        return None
    return SharedPrefix(keys=keys, values=values, mask=prompt_mask.bool(), n=n)


@contextlib.contextmanager
def attend_with_shared_prefix(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, `model`'s language model attends through `prefix_shared_attention`
    (calls without the `longrl_shared_prefix` keyword still get SDPA)."""
    register_prefix_attention()
    config = _text_config(model)
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
