"""Built-in reward functions. All share the one reward signature:

    fn(responses: list[str], **columns) -> list[float | None]

`columns` are dataset columns as lists aligned with `responses` (answer=[...],
options=[...], problem_type=[...], response_length=[...]); each built-in takes
the ones it needs and ignores the rest. Settings that are not columns
(max_len, buffer, ...) are bound by name when the function is resolved
(`resolve_reward_function("overlong", max_len=512, buffer=128)`).

None means "this function does not score this sample" (see rewards.combine).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from longrl.algos.overlong import soft_overlong_penalty
from longrl.rewards.answer import extract_choice, gold_choice

MULTIPLE_CHOICE_TYPES = frozenset({"multiple choice", "multiple_choice", "multiple-choice", "mc"})
# problem_type values that say "not multiple choice". Any other value (datasets use
# problem_type for the question's category too, e.g. "temporal" or "counting") is
# scored as multiple choice when the row has options or a letter answer.
OTHER_ANSWER_TYPES = frozenset(
    {
        "numerical",
        "numeric",
        "free-form",
        "free_form",
        "open-ended",
        "open_ended",
        "ocr",
        "regression",
        "math",
        "yes/no",
    }
)
_LETTER = re.compile(r"^\s*(?:<answer>)?\s*\(?[A-Za-z]\)?\s*(?:</answer>)?\s*$")


def _column(values: Sequence[Any] | None, size: int) -> Sequence[Any]:
    return [None] * size if values is None else values


def multiple_choice_accuracy(
    responses: list[str],
    *,
    answer: Sequence[str],
    options: Sequence[Sequence[str] | str | None] | None = None,
    problem_type: Sequence[str | None] | None = None,
    **_: Any,
) -> list[float | None]:
    """1.0 if the extracted choice (rewards.answer.extract_choice) equals the ground
    truth's letter, else 0.0. None where the function does not apply: problem_type
    names another answer type (OTHER_ANSWER_TYPES), or the row has neither options
    nor a letter answer and no multiple-choice problem_type. A ground truth that is
    not a choice raises ValueError for that sample (caught and counted by safe_call)."""
    size = len(responses)
    options, problem_type = _column(options, size), _column(problem_type, size)
    scores: list[float | None] = []
    for response, gold, opts, kind in zip(responses, answer, options, problem_type, strict=True):
        if not _is_multiple_choice(kind, opts, gold):
            scores.append(None)
            continue
        expected = gold_choice(gold, opts)
        scores.append(1.0 if extract_choice(response, opts) == expected else 0.0)
    return scores


def _is_multiple_choice(kind: str | None, options: Any, gold: str) -> bool:
    kind = None if kind is None else str(kind).strip().lower()
    if kind in MULTIPLE_CHOICE_TYPES:
        return True
    if kind in OTHER_ANSWER_TYPES:
        return False
    return bool(options) or bool(_LETTER.match(str(gold)))


_TAG = re.compile(r"<\s*/?\s*(?:think|answer)\s*>", re.I)
_THINK_ANSWER = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)
_ANSWER_ONLY_AFTER_THINK = re.compile(r"(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)


def _format_ok(response: str, think_opened_in_prompt: bool) -> bool:
    pattern = _ANSWER_ONLY_AFTER_THINK if think_opened_in_prompt else _THINK_ANSWER
    match = pattern.fullmatch(response)
    if match is None:
        return False
    think, answer = match.groups()
    # A stray tag inside either part means a second/nested block: not the format.
    return not _TAG.search(think) and not _TAG.search(answer) and bool(answer.strip())


def format_reward(
    responses: list[str], *, think_opened_in_prompt: bool = False, **_: Any
) -> list[float | None]:
    """1.0 for `<think>...</think>` then `<answer>...</answer>` with only whitespace
    around and between, exactly one of each, a non-blank answer; else 0.0. The
    think part may be empty. With think_opened_in_prompt=True (the chat template
    already wrote `<think>`), the response must start inside the think block."""
    return [1.0 if _format_ok(r, think_opened_in_prompt) else 0.0 for r in responses]


def soft_overlong_reward(
    responses: list[str],
    *,
    response_length: Sequence[int],
    max_len: int,
    buffer: int,
    penalty_factor: float = 1.0,
    **_: Any,
) -> list[float | None]:
    """DAPO soft overlong penalty of each response's token count (algos.overlong):
    0 up to max_len - buffer, linear down to -penalty_factor at max_len, then flat."""
    return [
        soft_overlong_penalty(int(length), max_len, buffer, penalty_factor)
        for _response, length in zip(responses, response_length, strict=True)
    ]
