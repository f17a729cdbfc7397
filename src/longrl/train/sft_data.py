"""SFT examples: the assistant target of a sample, and a step's batch of samples.

The target is the reply the model should produce after the prompt's
`<|im_start|>assistant\n`: `format_reasoning_target(...)` followed by the
end-of-turn token `<|im_end|>`, so the model learns to stop. It is tokenised on
its own and appended to the prompt row by `append_responses`, exactly where a
rollout's reply goes.

Records that cannot give a target (no reasoning under the thinking template,
a target longer than data.max_response_length) are left out once, at load time,
and counted. Per step, samples whose video fails to decode or whose prompt is
too long are skipped and counted by the RL helpers (`draw_decodable`,
`encode_prompts`), and the batch is topped up with the next samples in order:
nothing is ever substituted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import torch

from longrl.config.data import DataConfig
from longrl.config.sft import SftSection
from longrl.data.sample import Sample
from longrl.models.prompts import format_reasoning_target
from longrl.train.batches import PromptOrder
from longrl.train.groups import Group, split_groups
from longrl.train.policy import Policy
from longrl.train.prompts import draw_decodable, encode_prompts
from longrl.train.timing import PhaseTimer

logger = logging.getLogger("longrl.train")

END_OF_TURN = "<|im_end|>"


class SftDataError(ValueError):
    """A record or tokenizer that cannot give an SFT target; the message names it."""


def target_text(sample: Sample, thinking: bool, empty_think: bool = False) -> str | None:
    """The assistant reply to learn. Under the thinking template a sample without
    reasoning gives None, or with `empty_think` an empty think block and the answer."""
    if not thinking:
        return format_reasoning_target(None, sample.answer)
    if sample.reasoning is None or not sample.reasoning.strip():
        return format_reasoning_target("", sample.answer) if empty_think else None
    return format_reasoning_target(sample.reasoning, sample.answer)


def end_of_turn_id(tokenizer) -> int:
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise SftDataError(
            f"the tokenizer has no {END_OF_TURN} token; SFT needs the Qwen chat format"
        )
    return token_id


def target_token_ids(text: str, tokenizer, end_id: int) -> list[int]:
    """Reply tokens + end-of-turn, tokenised as generation would produce them."""
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], end_id]


def select_trainable(
    samples: Sequence[Sample], tokenizer, data: DataConfig, sft: SftSection
) -> tuple[list[Sample], Counter]:
    """The samples that give a target, and the count of the others by reason."""
    end_id = end_of_turn_id(tokenizer)
    kept: list[Sample] = []
    left_out: Counter = Counter()
    for sample in samples:
        where = sample.source or sample.problem_id
        text = target_text(sample, data.thinking, sft.missing_reasoning == "empty_think")
        if text is None:
            if sft.missing_reasoning == "raise":
                raise SftDataError(
                    f"{where}: no `reasoning` for the thinking target; add it, set "
                    "data.thinking=false (answer-only targets) or sft.missing_reasoning=skip"
                )
            left_out["no_reasoning"] += 1
            continue
        length = len(target_token_ids(text, tokenizer, end_id))
        if length > data.max_response_length:
            message = (
                f"{where}: target of {length} tokens > data.max_response_length="
                f"{data.max_response_length}"
            )
            if data.on_bad_sample == "raise":
                raise SftDataError(message + " (raise the limit or shorten the reasoning)")
            logger.warning("leaving out %s", message)
            left_out["target_too_long"] += 1
            continue
        kept.append(sample)
    if left_out:
        logger.warning("SFT targets: kept %d samples, left out %s", len(kept), dict(left_out))
    if not kept:
        raise SftDataError(
            f"no sample gives an SFT target (left out: {dict(left_out)}); with "
            "data.thinking=true every record needs `reasoning`"
        )
    return kept, left_out


def draw_step_batch(
    policy: Policy,
    order: PromptOrder,
    count: int,
    data: DataConfig,
    skipped: Counter,
    timer: PhaseTimer,
    empty_think: bool = False,
) -> list[Group]:
    """`count` samples ready to train on: decoded, prompt built, each video encoded once.

    Each sample becomes a Group with one response, its target tokens (`target_text`).
    """
    tokenizer = policy.tokenizer
    end_id = end_of_turn_id(tokenizer)
    items: list[Group] = []
    drawn_total, limit = 0, max(10 * count, 100)
    while len(items) < count:
        if drawn_total >= limit:
            raise RuntimeError(
                f"{drawn_total} samples drawn for one step but only {len(items)} of {count} "
                f"were usable; skipped so far: {dict(skipped)}. Check data.max_prompt_length "
                "and the dataset's videos."
            )
        with timer("data"):
            drawn = draw_decodable(order.next, count - len(items), data, skipped)
        drawn_total += len(drawn)
        with timer("encode"):
            encoded = encode_prompts(policy, drawn, data, skipped)
        if encoded is None:
            continue
        groups = split_groups(encoded.samples, encoded.model_input, encoded.video_embeds)
        for group in groups:
            text = target_text(group.sample, data.thinking, empty_think)
            ids = target_token_ids(text, tokenizer, end_id)
            group.responses = [torch.tensor(ids, dtype=torch.long)]
        items.extend(groups)
    return items
