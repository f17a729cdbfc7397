"""Attention functions that take over only the calls carrying their own state.

transformers' `AttentionInterface` sends every attention call of a language
model to the function registered under its `attn_implementation`. Ours (Ulysses
sequence parallelism, shared-prefix decoding) act only when the caller passes
their per-call state as a keyword argument; any other call (a plain forward, a
model used outside our loops) runs transformers' SDPA function unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def with_sdpa_fallback(state_kwarg: str) -> Callable:
    """Decorate `attend(state, module, query, key, value, attention_mask, dropout, scaling,
    **kwargs)` into an `AttentionInterface` function that pops `state_kwarg` from the
    call's keywords and runs SDPA when it is absent."""

    def decorate(attend: Callable) -> Callable:
        @functools.wraps(attend)
        def attention(
            module: torch.nn.Module,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            attention_mask: torch.Tensor | None,
            dropout: float = 0.0,
            scaling: float | None = None,
            **kwargs,
        ):
            state = kwargs.pop(state_kwarg, None)
            if state is None:
                from transformers.integrations.sdpa_attention import sdpa_attention_forward

                return sdpa_attention_forward(
                    module,
                    query,
                    key,
                    value,
                    attention_mask,
                    dropout=dropout,
                    scaling=scaling,
                    **kwargs,
                )
            return attend(
                state, module, query, key, value, attention_mask, dropout, scaling, **kwargs
            )

        return attention

    return decorate


def register_attention(name: str, attention: Callable) -> None:
    """Register `attention` under `name` (idempotent), with SDPA's mask builder: calls
    without our state then get exactly the mask SDPA would."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, sdpa_mask)
