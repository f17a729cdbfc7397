"""`SequenceParallelLM`: call a transformers causal LM with its sequence split across ranks.

The wrapper is called exactly like the model (`input_ids` or `inputs_embeds`,
`attention_mask`, `position_ids`, `past_key_values`, `use_cache`, `logits_to_keep`)
and returns full logits, so the rollout engine and the log-prob code run under
sequence parallelism unchanged: `TorchRolloutEngine(SequenceParallelLM(model, group))`.

Per call, on every rank of the group (all holding the same batch):
  1. pad the new tokens on the left to a multiple of sp, keep this rank's chunk of
     ids/embeddings and positions (1-D [B, L] or M-RoPE [3, B, L], so rotary is
     applied locally by the model);
  2. build the full-sequence attention mask once from the caller's 2-D mask
     (see `sequence_layout`) and hand it to every attention layer through the
     `longrl_sequence_parallel` keyword (no mask at all for one call without the
     caller's padding: causal SDPA after the SP pads);
  3. compute logits only for the kept positions this rank holds, gather them.

KV cache: the model's own DynamicCache, holding this rank's chunk of every call
(a sequence-sharded cache); the wrapper records the calls (width, sharded or replicated) on the cache
object (`longrl_sequence_layout`), which `batch_repeat_interleave` /
`batch_select_indices` leave valid (the layout does not depend on the batch).
Decode steps (no gradients, fewer new tokens than ranks) run whole on every rank
and combine partial softmaxes over the ranks' cached keys, so the cache never moves.

Gradients: the loss is computed identically on every rank from the gathered
logits; parameter gradients must then be summed over the group (see `sequence`).
Models need explicit `position_ids` (the model would otherwise number the local
chunk from 0) and precomputed embeddings for images/video (`inputs_embeds`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.sequence import gather_sequence, group_rank, group_size, shard_sequence
from longrl.parallel.sequence_layout import (
    SequenceLayout,
    full_attention_mask,
    local_attention_mask,
    padded_width,
)
from longrl.parallel.ulysses import (
    STATE_KWARG,
    UlyssesCall,
    check_heads,
    enable_ulysses,
    text_config,
)

LAYOUT_ATTRIBUTE = "longrl_sequence_layout"


class SequenceParallelLM(torch.nn.Module):
    """A causal LM whose forward runs Ulysses sequence parallelism over `group`."""

    def __init__(
        self,
        model: torch.nn.Module,
        group: dist.ProcessGroup | None,
        *,
        verify_inputs: bool = True,
    ) -> None:
        super().__init__()
        config = text_config(model)
        self.sp = group_size(group)
        check_heads(config.num_attention_heads, config.num_key_value_heads, self.sp)
        enable_ulysses(model)
        self.model = model
        self.group = group
        # One tiny all-gather per call that turns "SP ranks were given different
        # batches" into an error on every rank instead of wrong numbers or a hang.
        self.verify_inputs = verify_inputs

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **unsupported,
    ):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        _check_arguments(input_ids, inputs_embeds, position_ids, logits_to_keep, unsupported)
        tokens = input_ids if inputs_embeds is None else inputs_embeds
        batch, width = tokens.shape[:2]
        replicated = self.replicates(width)
        layout = self._past_layout(past_key_values).appended(width, replicated)
        if attention_mask is None:
            attention_mask = torch.ones(
                batch, layout.logical_length, dtype=torch.long, device=tokens.device
            )
        if self.verify_inputs:
            self._verify_same_inputs(input_ids, attention_mask, position_ids, layout)
        inputs = {"input_ids": input_ids, "inputs_embeds": inputs_embeds}
        common = {
            "attention_mask": None,  # the mask travels in the UlyssesCall
            "past_key_values": past_key_values,
            "use_cache": use_cache,
        }
        if replicated:
            mask = local_attention_mask(layout, attention_mask, group_rank(self.group))
            call = UlyssesCall(self.group, mask, replicated=True)
            out = self.model(
                **inputs,
                **common,
                position_ids=position_ids,
                logits_to_keep=logits_to_keep,
                **{STATE_KWARG: call},
            )
            logits = out.logits  # identical on every rank
        else:
            pad = padded_width(width, self.sp) - width
            call = self._sharded_call(layout, attention_mask, pad)
            local = {k: self._local(v, pad, dim=1) for k, v in inputs.items() if v is not None}
            kept, local_keep = self._kept_logits(width, logits_to_keep, tokens.device)
            out = self.model(
                **local,
                **common,
                position_ids=self._local(position_ids, pad, dim=-1),
                logits_to_keep=local_keep,
                **{STATE_KWARG: call},
            )
            logits = gather_sequence(out.logits, dim=1, group=self.group, sizes=kept)
        cache = out.past_key_values if out.past_key_values is not None else past_key_values
        if cache is not None:
            setattr(cache, LAYOUT_ATTRIBUTE, layout)
        return CausalLMOutputWithPast(logits=logits, past_key_values=out.past_key_values)

    def _sharded_call(self, layout: SequenceLayout, mask: torch.Tensor, pad: int) -> UlyssesCall:
        """The mask for a sharded call, or none when it is plain causal after the SP pads.

        One call without cache and without padding from the caller (e.g. one long
        prompt per rank) has its keys in sequence order, SP pads first: causal
        attention on the rest is exact. The caller's mask is the same on every rank.
        """
        if len(layout.calls) == 1 and bool(mask.bool().all()):
            return UlyssesCall(self.group, None, causal_after=pad)
        return UlyssesCall(self.group, full_attention_mask(layout, mask))

    def replicates(self, width: int) -> bool:
        """Run this call whole on every rank (decode steps; see `ulysses`)?

        Depends only on the width and the grad mode, which all ranks of the group
        share, so every rank takes the same branch.
        """
        return self.sp > 1 and width < self.sp and not torch.is_grad_enabled()

    def _local(self, tensor: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
        if pad:
            shape = list(tensor.shape)
            shape[dim] = pad
            # Pad values never matter: pad positions are masked as keys and dropped as outputs.
            tensor = torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
        return shard_sequence(tensor, dim % tensor.dim(), self.group)

    def _kept_logits(
        self, width: int, logits_to_keep: int, device
    ) -> tuple[list[int], torch.Tensor]:
        """Per-rank counts of kept positions, and this rank's local indices of them.

        The kept positions are the last `logits_to_keep` real tokens (all if 0); SP
        pads are never kept, so no rank computes logits it would throw away.
        """
        padded = padded_width(width, self.sp)
        chunk = padded // self.sp
        keep = width if logits_to_keep == 0 else min(logits_to_keep, width)
        start = padded - keep
        counts = [max(0, min(chunk, (r + 1) * chunk - start)) for r in range(self.sp)]
        count = counts[group_rank(self.group)]
        return counts, torch.arange(chunk - count, chunk, device=device)

    def _past_layout(self, cache) -> SequenceLayout:
        if cache is None:
            return SequenceLayout(self.sp)
        layout = getattr(cache, LAYOUT_ATTRIBUTE, None)
        stored = cache.get_seq_length()
        if layout is None:
            if stored:
                raise ParallelConfigError(
                    "past_key_values holds tokens but was not filled by SequenceParallelLM; "
                    "a cache from a plain forward cannot be used under sequence parallelism"
                )
            return SequenceLayout(self.sp)
        if layout.sp != self.sp or layout.local_length != stored:
            raise ParallelConfigError(
                f"past_key_values holds {stored} positions per rank, its sequence layout says "
                f"{layout.local_length} (sp={layout.sp}); the cache was changed outside "
                "SequenceParallelLM (e.g. cropped) or comes from another group"
            )
        return layout

    def _verify_same_inputs(self, input_ids, mask, positions, layout: SequenceLayout) -> None:
        if self.sp == 1:
            return
        ids_sum = int(input_ids.sum()) if input_ids is not None else -1
        signature = torch.tensor(
            [
                mask.shape[0],
                layout.logical_length,
                layout.calls[-1].width,
                int(mask.long().sum()),
                int(positions.long().sum()),
                ids_sum,
            ],
            dtype=torch.long,
            device=mask.device,
        )
        signatures = [torch.empty_like(signature) for _ in range(self.sp)]
        dist.all_gather(signatures, signature, group=self.group)
        if any(not torch.equal(s, signatures[0]) for s in signatures):
            table = torch.stack(signatures).tolist()
            raise ParallelConfigError(
                "the ranks of a sequence-parallel group were given different inputs "
                "(rows: rank; columns: batch, mask width, new tokens, mask sum, position sum, "
                f"id sum): {table}; every SP rank must receive the same batch"
            )


def _check_arguments(input_ids, inputs_embeds, position_ids, logits_to_keep, unsupported) -> None:
    if unsupported:
        raise ParallelConfigError(
            f"SequenceParallelLM does not take {sorted(unsupported)}: pass precomputed "
            "inputs_embeds (video/image embeddings scattered in) and explicit position_ids"
        )
    if (input_ids is None) == (inputs_embeds is None):
        raise ParallelConfigError("give exactly one of input_ids or inputs_embeds")
    if position_ids is None:
        raise ParallelConfigError(
            "SequenceParallelLM needs explicit position_ids ([B, L] or M-RoPE [3, B, L]): "
            "each rank sees only its chunk and cannot number positions itself"
        )
    if not isinstance(logits_to_keep, int) or logits_to_keep < 0:
        raise ParallelConfigError(f"logits_to_keep must be an int >= 0, got {logits_to_keep!r}")
    width = (input_ids if inputs_embeds is None else inputs_embeds).shape[1]
    if position_ids.shape[-1] != width:
        raise ParallelConfigError(
            f"position_ids cover {position_ids.shape[-1]} tokens but the input has {width}"
        )
