"""Score one question's responses and compute pass@k. Pure functions, no model.

Correctness comes from the accuracy reward itself (`multiple_choice_accuracy`)
and the extracted letter from the same `extract_choice`, so a response the
trainer rewards is a response the evaluator counts, and no string is ever
compared with `==` to the dataset answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import comb
from typing import Any

from longrl.data.sample import Sample
from longrl.rewards.answer import extract_choice, gold_choice
from longrl.rewards.builtin import format_reward, multiple_choice_accuracy


class UnscorableQuestion(ValueError):
    """A question the multiple-choice scorer does not apply to; `reason` is a skip code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


@dataclass
class QuestionResult:
    """One question and its n scored responses (lists are aligned, one entry per response)."""

    problem_id: str
    problem_type: str | None
    question: str
    answer: str  # the gold option letter
    responses: list[str]
    extracted: list[str | None]  # the letter read from each response, None = no answer found
    correct: list[bool]
    format_ok: list[bool] | None  # None when no format is checked (non-thinking prompts)
    response_length: list[int]  # tokens, the stop token included
    finished: list[bool]  # False = cut at max_new_tokens

    @property
    def n(self) -> int:
        return len(self.responses)

    @property
    def num_correct(self) -> int:
        return sum(self.correct)

    def pass_at(self, k: int) -> float:
        return pass_at_k(self.n, self.num_correct, k)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["num_correct"] = self.num_correct
        return row


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    With n == k this is 1 if any sample is correct, else 0.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every draw of k samples holds a correct one
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def _options(sample: Sample) -> Any:
    return sample.extra.get("options")


def gold_letter(sample: Sample) -> str:
    """The sample's gold option letter; raises UnscorableQuestion when accuracy does not apply."""
    options = _options(sample)
    try:
        applies = multiple_choice_accuracy(
            [""], answer=[sample.answer], options=[options], problem_type=[sample.problem_type]
        )[0]
    except ValueError as err:
        raise UnscorableQuestion("bad_answer", f"{_where(sample)}: {err}") from None
    if applies is None:
        raise UnscorableQuestion(
            "not_multiple_choice",
            f"{_where(sample)}: not a multiple-choice question (problem_type "
            f"{sample.problem_type!r}, no options and no letter answer); `longrl eval` scores "
            "multiple choice only",
        )
    return gold_choice(sample.answer, options)


def score_question(
    sample: Sample,
    responses: Sequence[str],
    lengths: Sequence[int],
    finished: Sequence[bool],
    *,
    thinking: bool,
) -> QuestionResult:
    """Score the decoded responses of one question (special tokens kept, stop token stripped)."""
    n = len(responses)
    if not n or len(lengths) != n or len(finished) != n:
        raise ValueError(
            f"{_where(sample)}: {n} responses, {len(lengths)} lengths, {len(finished)} flags"
        )
    gold = gold_letter(sample)
    options = _options(sample)
    scores = multiple_choice_accuracy(
        list(responses),
        answer=[sample.answer] * n,
        options=[options] * n,
        problem_type=[sample.problem_type] * n,
    )
    format_ok = None
    if thinking:  # the format reward checks <think>..</think><answer>..</answer>
        format_ok = [score == 1.0 for score in format_reward(list(responses))]
    return QuestionResult(
        problem_id=sample.problem_id,
        problem_type=sample.problem_type,
        question=sample.prompt,
        answer=gold,
        responses=list(responses),
        extracted=[extract_choice(text, options) for text in responses],
        correct=[score == 1.0 for score in scores],
        format_ok=format_ok,
        response_length=[int(x) for x in lengths],
        finished=[bool(x) for x in finished],
    )


_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.S)


def has_reasoning(response: str) -> bool:
    """True when the response's first think block holds text (not `<think></think>`)."""
    match = _THINK_BLOCK.search(response)
    return bool(match and match.group(1).strip())


def _where(sample: Sample) -> str:
    return sample.source or sample.problem_id
