"""Built-in rollout engine: batched KV-cache generation with group prefix sharing.

The prompt of each group (the long video) is prefilled once and the group's n
samples decode from its KV cache. For transformers models attending with SDPA or
eager attention, the cache is kept once per group: each decode step attends to the
prompt once per group and to each sample's own tokens, merged exactly
(`longrl.rollout.prefix_attention`). Other models (the sequence-parallel wrapper,
other kernels), n = 1, or `prefix_attention=False` repeat the prompt's cache n ways
instead. A naive mode (`share_prefix=False`) prefills every sample separately; it
exists for the equivalence tests and the ablation benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from longrl.rollout.prefix_attention import (
    STATE_KWARG,
    SharedPrefix,
    attend_with_shared_prefix,
    shared_prefix_from_cache,
    supports_prefix_attention,
)
from longrl.rollout.sampling import SamplingParams, choose_tokens, scaled_log_probs


@dataclass
class PromptBatch:
    """Left-padded prompts. Give `input_ids`, or `inputs_embeds` (then ids are optional).

    `position_ids`: [3, B, L] (M-RoPE), [B, L] (1-D), or None (1-D positions
    from the attention mask, as transformers' `generate` does).
    """

    attention_mask: torch.Tensor
    input_ids: torch.Tensor | None = None
    inputs_embeds: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.input_ids is None and self.inputs_embeds is None:
            raise ValueError("PromptBatch needs input_ids or inputs_embeds")
        if not bool(self.attention_mask[:, -1].all()):
            raise ValueError(
                "prompts must be left-padded (the last column must be all real tokens)"
            )

    @property
    def batch_size(self) -> int:
        return self.attention_mask.shape[0]


@dataclass
class RolloutOutput:
    """Row r is sample r % n of prompt `prompt_index[r]` (rows grouped by prompt)."""

    response_ids: torch.Tensor  # [B*n, T], pad after the stop token
    response_mask: torch.Tensor  # [B*n, T], 1 on generated tokens (stop token included)
    log_probs: torch.Tensor  # [B*n, T], log-prob of each token under the tempered policy
    prompt_index: torch.Tensor  # [B*n]
    finished: torch.Tensor  # [B*n], True if a stop token ended the response

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)


class RolloutEngine(Protocol):
    def generate(self, prompts: PromptBatch, params: SamplingParams) -> RolloutOutput: ...

    def sync_weights(self, model: torch.nn.Module) -> None: ...


def text_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """1-D positions of left-padded rows: 0.. over real tokens, 1 on padding (as transformers)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def next_positions(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the first generated token per row: max over real prompt positions + 1.

    For M-RoPE this is the reference rule: text after the prompt continues at
    the largest position of any axis + 1, on all three axes.
    """
    valid = attention_mask.bool()
    if position_ids.dim() == 3:
        per_token = position_ids.max(dim=0).values
    else:
        per_token = position_ids
    return per_token.masked_fill(~valid, -1).max(dim=-1).values + 1


class TorchRolloutEngine:
    """Generation with transformers model classes and a `DynamicCache`."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        pad_token_id: int,
        eos_token_ids: tuple[int, ...],
        share_prefix: bool = True,
        prefix_attention: bool = True,
    ) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.eos_token_ids = tuple(eos_token_ids)
        self.share_prefix = share_prefix
        self.prefix_attention = prefix_attention

    def sync_weights(self, model: torch.nn.Module) -> None:
        # The built-in engine decodes with the policy module itself.
        self.model = model

    @torch.no_grad()
    def generate(self, prompts: PromptBatch, params: SamplingParams) -> RolloutOutput:
        n = params.n
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=prompts.attention_mask.device)
            generator.manual_seed(params.seed)
        positions = prompts.position_ids
        if positions is None:
            positions = text_position_ids(prompts.attention_mask)

        prefix = None
        if self.share_prefix:
            last_logits, cache = self._prefill(prompts, positions)
            # n = 1 shares nothing: the plain cache path has fewer operations per step.
            if self.prefix_attention and n > 1 and supports_prefix_attention(self.model):
                prefix = shared_prefix_from_cache(cache, prompts.attention_mask, n)
            if prefix is None:
                cache.batch_repeat_interleave(n)
            else:
                cache = None  # the decode cache holds only the generated tokens
            last_logits = last_logits.repeat_interleave(n, dim=0)
        else:
            repeated = _repeat_prompts(prompts, positions, n)
            last_logits, cache = self._prefill(repeated, repeated.position_ids)
        attention_mask = prompts.attention_mask.repeat_interleave(n, dim=0)
        next_pos = next_positions(positions, prompts.attention_mask).repeat_interleave(n, dim=0)
        args = (last_logits, cache, attention_mask, next_pos, positions.dim(), params, generator)
        if prefix is None:
            return self._decode(*args)
        with attend_with_shared_prefix(self.model):
            return self._decode(*args, prefix=prefix)

    def _prefill(self, prompts: PromptBatch, positions: torch.Tensor):
        out = self.model(
            input_ids=prompts.input_ids if prompts.inputs_embeds is None else None,
            inputs_embeds=prompts.inputs_embeds,
            attention_mask=prompts.attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :], out.past_key_values

    def _decode(
        self,
        logits: torch.Tensor,
        cache,
        attention_mask: torch.Tensor,
        next_pos: torch.Tensor,
        position_rank: int,
        params: SamplingParams,
        generator: torch.Generator | None,
        prefix: SharedPrefix | None = None,
    ) -> RolloutOutput:
        """Sample up to max_new_tokens per row. With `prefix`, `cache` holds only the
        generated tokens (None before the first step) and attention reads the prompt
        from `prefix`; the 2-D mask is then not needed (generated tokens are all real)."""
        rows = logits.shape[0]
        device = logits.device
        stop_ids = torch.tensor(
            sorted({*self.eos_token_ids, *params.stop_token_ids}), device=device
        )
        tokens = torch.full(
            (rows, params.max_new_tokens), self.pad_token_id, dtype=torch.long, device=device
        )
        token_log_probs = torch.zeros(rows, params.max_new_tokens, device=device)
        mask = torch.zeros(rows, params.max_new_tokens, dtype=torch.long, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        # Rows still decoding; finished rows are dropped from the cache so they cost nothing.
        active = torch.arange(rows, device=device)

        for step in range(params.max_new_tokens):
            log_probs = scaled_log_probs(logits, params.temperature)
            chosen = choose_tokens(log_probs, params, generator)
            tokens[active, step] = chosen
            token_log_probs[active, step] = log_probs.gather(-1, chosen[:, None]).squeeze(-1)
            mask[active, step] = 1
            stopped = torch.isin(chosen, stop_ids)
            finished[active[stopped]] = True
            if step == params.max_new_tokens - 1 or bool(stopped.all()):
                break
            if bool(stopped.any()):
                keep = (~stopped).nonzero().squeeze(-1)
                if cache is not None:
                    cache.batch_select_indices(keep)
                if prefix is not None:
                    prefix.select_rows(keep)
                active, chosen = active[keep], chosen[keep]
                attention_mask, next_pos = attention_mask[keep], next_pos[keep]
            step_pos = next_pos[:, None]
            if position_rank == 3:
                step_pos = step_pos[None].expand(3, -1, -1)
            if prefix is None:
                attention_mask = torch.cat(
                    [attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1
                )
                extra = {"attention_mask": attention_mask}
            else:
                extra = {"attention_mask": None, STATE_KWARG: prefix}
            out = self.model(
                input_ids=chosen[:, None],
                position_ids=step_pos,
                past_key_values=cache,
                use_cache=True,
                **extra,
            )
            logits, cache = out.logits[:, -1, :], out.past_key_values
            next_pos = next_pos + 1

        width = int(mask.sum(-1).max().item()) if rows else 0
        return RolloutOutput(
            response_ids=tokens[:, :width],
            response_mask=mask[:, :width],
            log_probs=token_log_probs[:, :width],
            prompt_index=torch.arange(rows, device=device) // params.n,
            finished=finished,
        )


def _repeat_prompts(prompts: PromptBatch, positions: torch.Tensor, n: int) -> PromptBatch:
    batch_dim = 1 if positions.dim() == 3 else 0
    return PromptBatch(
        attention_mask=prompts.attention_mask.repeat_interleave(n, dim=0),
        input_ids=None if prompts.input_ids is None else prompts.input_ids.repeat_interleave(n, 0),
        inputs_embeds=None
        if prompts.inputs_embeds is None
        else prompts.inputs_embeds.repeat_interleave(n, dim=0),
        position_ids=positions.repeat_interleave(n, dim=batch_dim),
    )
