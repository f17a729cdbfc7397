"""Per-token log-probs of sampled responses, for old/reference/update passes.

Prefix-shared mode runs each group's prompt once (with gradients when the
caller trains), repeats its key/value cache n ways, and runs the n responses
against it. The naive mode concatenates prompt + response per sample and runs
B*n full sequences. Both give the same log-probs and gradients (tested).

Cost, with prompt length P, response length R, group size n, per group:
  naive   : n * (P + R) token-forwards, activations for n*(P+R) tokens
  shared  : P + n * R   token-forwards, activations for P + n*R tokens,
            plus the repeated KV of the prompt (n * P * kv_dim per layer).
For long videos P >> R, so compute and activation memory drop by ~n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longrl.rollout.engine import PromptBatch, next_positions, text_position_ids
from longrl.train.token_stats import token_log_probs_and_entropy


@dataclass
class ResponseLogProbs:
    log_probs: torch.Tensor  # [B*n, T], zero where response_mask is 0
    entropy: torch.Tensor | None  # [B*n, T] or None


def response_log_probs(
    model: torch.nn.Module,
    prompts: PromptBatch,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    n: int,
    temperature: float = 1.0,
    share_prefix: bool = True,
    with_entropy: bool = False,
) -> ResponseLogProbs:
    """Log-probs of `response_ids` [B*n, T] (rows grouped by prompt) under `model`."""
    if response_ids.shape[0] != prompts.batch_size * n:
        raise ValueError(
            f"{response_ids.shape[0]} responses for {prompts.batch_size} prompts x n={n}"
        )
    positions = prompts.position_ids
    if positions is None:
        positions = text_position_ids(prompts.attention_mask)
    if share_prefix:
        pieces = _shared_prefix_logits(model, prompts, positions, response_ids, response_mask, n)
    else:
        pieces = [_naive_logits(model, prompts, positions, response_ids, response_mask, n)]
    # Log-prob and entropy per piece of response positions (no [B*n, T, V] concatenation),
    # fused over the vocabulary (longrl.train.token_stats).
    log_probs, entropies, start = [], [], 0
    for logits in pieces:
        stop = start + logits.shape[1]
        lp, ent = token_log_probs_and_entropy(
            logits,
            response_ids[:, start:stop],
            temperature=temperature,
            with_entropy=with_entropy,
        )
        log_probs.append(lp)
        entropies.append(ent)
        start = stop
    token_log_probs = torch.cat(log_probs, dim=1)
    entropy = torch.cat(entropies, dim=1) * response_mask if with_entropy else None
    return ResponseLogProbs(token_log_probs * response_mask, entropy)


def _response_positions(positions, prompt_mask, response_len: int, n: int) -> torch.Tensor:
    start = next_positions(positions, prompt_mask).repeat_interleave(n, dim=0)
    steps = torch.arange(response_len, device=start.device)
    response_positions = start[:, None] + steps[None, :]
    if positions.dim() == 3:
        response_positions = response_positions[None].expand(3, -1, -1)
    return response_positions


def _shared_prefix_logits(model, prompts, positions, response_ids, response_mask, n):
    prompt_out = model(
        input_ids=prompts.input_ids if prompts.inputs_embeds is None else None,
        inputs_embeds=prompts.inputs_embeds,
        attention_mask=prompts.attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    cache = prompt_out.past_key_values
    cache.batch_repeat_interleave(n)
    prompt_mask = prompts.attention_mask.repeat_interleave(n, dim=0)
    # The last response token predicts nothing we score; feed the others.
    response_out = model(
        input_ids=response_ids[:, :-1],
        attention_mask=torch.cat([prompt_mask, response_mask[:, :-1]], dim=1),
        position_ids=_response_positions(
            positions, prompts.attention_mask, response_ids.shape[1] - 1, n
        ),
        past_key_values=cache,
        use_cache=True,
    )
    # The prompt's last logits score each sample's first token: [B*n, 1, V], then the rest.
    first = prompt_out.logits[:, -1:, :].repeat_interleave(n, dim=0)
    return [first, response_out.logits]


def _naive_logits(model, prompts, positions, response_ids, response_mask, n):
    batch_dim = 1 if positions.dim() == 3 else 0
    prompt_len = prompts.attention_mask.shape[1]
    prompt_mask = prompts.attention_mask.repeat_interleave(n, dim=0)
    response_positions = _response_positions(
        positions, prompts.attention_mask, response_ids.shape[1], n
    )
    full_positions = torch.cat(
        [positions.repeat_interleave(n, dim=batch_dim), response_positions], dim=-1
    )
    full_mask = torch.cat([prompt_mask, response_mask], dim=1)
    if prompts.inputs_embeds is None:
        full_ids = torch.cat([prompts.input_ids.repeat_interleave(n, dim=0), response_ids], dim=1)
        out = model(input_ids=full_ids, attention_mask=full_mask, position_ids=full_positions)
    else:
        response_embeds = model.get_input_embeddings()(response_ids)
        full_embeds = torch.cat(
            [prompts.inputs_embeds.repeat_interleave(n, dim=0), response_embeds], dim=1
        )
        out = model(
            inputs_embeds=full_embeds, attention_mask=full_mask, position_ids=full_positions
        )
    return out.logits[:, prompt_len - 1 : -1, :]
