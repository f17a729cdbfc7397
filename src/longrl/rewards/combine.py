"""Weighted combination of reward functions, and how None scores are treated.

None ("no score") semantics, used everywhere downstream:
- a function returns None for a sample it does not apply to (e.g. accuracy on
  an open-ended question) or on_error=None after a failure;
- the combined total of a sample is the weighted sum over the functions that
  scored it: total = sum_{f : v_f is not None} w_f * v_f. It is None only when
  NO function scored the sample;
- a None total means the sample has no reward: `algos.rewards_from_scores`
  marks it invalid, it is left out of group statistics, gets advantage 0 and
  should be masked out of the loss;
- means reported as metrics are over scored samples only (`mean_of_scored`),
  with the scored fraction reported beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from longrl.rewards.errors import RewardError
from longrl.rewards.registry import resolve_reward_function
from longrl.rewards.safe_call import OnError, RewardFn, SafeReward, check_on_error


@dataclass(frozen=True)
class RewardScores:
    total: list[float | None]
    per_function: dict[str, list[float | None]]
    errors: dict[str, int]  # per function: samples that failed in this call


def mean_of_scored(values: Sequence[float | None]) -> float | None:
    """Mean over the non-None values; None if there are none."""
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


class CombinedReward:
    """Callable `(responses, **columns) -> RewardScores` over weighted SafeRewards."""

    def __init__(self, parts: Mapping[str, tuple[RewardFn, float]], on_error: OnError = 0.0):
        if not parts:
            raise RewardError("combine() needs at least one reward function")
        on_error = check_on_error(on_error)
        self.weights = {name: float(weight) for name, (_, weight) in parts.items()}
        self.functions = {name: SafeReward(fn, name, on_error) for name, (fn, _) in parts.items()}

    def __call__(self, responses: Sequence[str], **columns: Sequence[Any]) -> RewardScores:
        per_function: dict[str, list[float | None]] = {}
        errors: dict[str, int] = {}
        for name, safe in self.functions.items():
            before = safe.error_count
            per_function[name] = safe(responses, **columns)
            errors[name] = safe.error_count - before
        total: list[float | None] = []
        for i in range(len(responses)):
            terms = [
                self.weights[name] * values[i]
                for name, values in per_function.items()
                if values[i] is not None
            ]
            total.append(sum(terms) if terms else None)
        return RewardScores(total=total, per_function=per_function, errors=errors)

    @property
    def error_counts(self) -> dict[str, int]:
        """Failed samples per function since construction."""
        return {name: safe.error_count for name, safe in self.functions.items()}


def combine(
    weights: Mapping[str, float],
    *,
    functions: Mapping[str, RewardFn] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    on_error: OnError = 0.0,
) -> CombinedReward:
    """Weighted sum of reward functions, e.g. `combine({"accuracy": 1.0, "format": 0.5})`.

    Each key of `weights` is looked up in `functions` first (callables you pass
    in), else resolved as a spec: a built-in name or "path/to/file.py:name", with
    `settings[key]` bound as keyword arguments. Weight 0 keeps the function as a
    logged metric without affecting the total.
    """
    functions = functions or {}
    settings = settings or {}
    unknown_settings = sorted(set(settings) - set(weights))
    if unknown_settings:
        raise RewardError(f"settings given for rewards not in weights: {unknown_settings}")
    parts = {}
    for name, weight in weights.items():
        if name in functions:
            fn = functions[name]
            if settings.get(name):
                raise RewardError(f"bind settings of the callable {name!r} yourself (partial)")
        else:
            fn = resolve_reward_function(name, **settings.get(name, {}))
        parts[name] = (fn, weight)
    return CombinedReward(parts, on_error)


def score_metrics(scores: RewardScores, prefix: str = "reward") -> dict[str, float]:
    """Means and (population) std over scored samples, scored fractions and error counts."""
    size = len(scores.total)
    metrics: dict[str, float] = {}
    series = {"total": scores.total, **scores.per_function}
    for name, values in series.items():
        mean = mean_of_scored(values)
        if mean is not None:
            metrics[f"{prefix}/{name}/mean"] = mean
            scored_values = [v for v in values if v is not None]
            variance = sum((v - mean) ** 2 for v in scored_values) / len(scored_values)
            metrics[f"{prefix}/{name}/std"] = variance**0.5
        scored = sum(v is not None for v in values)
        metrics[f"{prefix}/{name}/scored_fraction"] = scored / size if size else 0.0
    for name, count in scores.errors.items():
        metrics[f"{prefix}/{name}/errors"] = float(count)
    return metrics
