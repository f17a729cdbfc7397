"""Aggregate scored questions into the report's metrics. Pure functions.

Every rate is over responses (n per question), so `accuracy` is the mean of
the flattened `correct` column of predictions.jsonl and equals the mean of
per-question pass@1. pass@k is the mean over questions of the unbiased
per-question estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from longrl.eval.scoring import QuestionResult, has_reasoning

UNSPECIFIED_TYPE = "unspecified"  # per-type key for questions without a problem_type


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(results: Sequence[QuestionResult], k: int) -> dict[str, Any]:
    """Metrics of a set of questions that all have the same number of responses."""
    counts = {r.n for r in results}
    if len(counts) > 1:
        raise ValueError(f"questions have different numbers of responses: {sorted(counts)}")
    correct = [float(c) for r in results for c in r.correct]
    formats = [float(f) for r in results if r.format_ok is not None for f in r.format_ok]
    # Under the thinking prompt (format checked): how often the think block holds text.
    reasoned = [
        float(has_reasoning(text))
        for r in results
        if r.format_ok is not None
        for text in r.responses
    ]
    metrics: dict[str, Any] = {
        "num_questions": len(results),
        "num_responses": len(correct),
        "accuracy": _mean(correct),
        "pass_at_1": _mean([r.pass_at(1) for r in results]),
        f"pass_at_{k}": _mean([r.pass_at(k) for r in results]) if results else None,
        "format_accuracy": _mean(formats),
        "reasoning_rate": _mean(reasoned),
        "extraction_failure_rate": _mean([float(e is None) for r in results for e in r.extracted]),
        "mean_response_length": _mean([float(x) for r in results for x in r.response_length]),
        "truncated_rate": _mean([float(not f) for r in results for f in r.finished]),
    }
    return metrics


def summarize_by_type(results: Sequence[QuestionResult], k: int) -> dict[str, dict[str, Any]]:
    """`summarize` per problem_type (questions without one under UNSPECIFIED_TYPE), sorted."""
    by_type: dict[str, list[QuestionResult]] = {}
    for result in results:
        by_type.setdefault(result.problem_type or UNSPECIFIED_TYPE, []).append(result)
    return {name: summarize(group, k) for name, group in sorted(by_type.items())}
