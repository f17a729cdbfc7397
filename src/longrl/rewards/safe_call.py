"""Call a reward function so that one bad sample cannot stop the run.

`SafeReward(fn, name, on_error)` calls `fn(responses, **columns)` on the whole
batch first. If that raises, it calls fn once per sample to find which samples
fail; each failing sample is logged (logger "longrl.rewards", with the
exception), counted in `error_count`, and scored `on_error`:

- a float (e.g. 0.0): that score;
- None: "no score" (the sample is left out of means and advantages);
- "raise": a RewardError naming the function and the sample is raised.

A returned value that is not a finite number, bool or None (NaN, inf, a
string) is treated like an exception for that sample. Contract breaks that are
not about one sample raise RewardError at once: a result of the wrong length,
a missing column the function requires, columns of the wrong length.

Columns are passed by name; a function without **kwargs only receives the
columns it declares.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from longrl.rewards.errors import RewardError

logger = logging.getLogger("longrl.rewards")

RewardFn = Callable[..., Sequence[float | None]]
OnError = float | None | Literal["raise"]


def check_on_error(on_error: Any) -> OnError:
    if on_error is None or on_error == "raise":
        return on_error
    if isinstance(on_error, bool) or not isinstance(on_error, int | float):
        raise RewardError(f"on_error must be a number, None or 'raise', got {on_error!r}")
    return float(on_error)


def _columns_for(fn: RewardFn, name: str, columns: Mapping[str, Sequence[Any]]) -> dict:
    """The columns fn accepts; RewardError if it requires one the batch lacks."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins/C callables have no signature
        return dict(columns)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        accepted = set(columns)
    else:
        accepted = {
            p.name
            for p in parameters[1:]
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }
    required = [
        p.name
        for p in parameters[1:]
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    missing = [col for col in required if col not in columns]
    if missing:
        raise RewardError(
            f"reward {name!r} needs column(s) {missing}; the batch has {sorted(columns)}. "
            "Add the column to the dataset or bind it when resolving the reward"
        )
    return {key: value for key, value in columns.items() if key in accepted}


def _check_aligned(responses: Sequence[str], columns: Mapping[str, Sequence[Any]]) -> None:
    for key, values in columns.items():
        if isinstance(values, str) or not hasattr(values, "__len__"):
            raise RewardError(f"column {key!r} must be a list aligned with responses")
        if len(values) != len(responses):
            raise RewardError(
                f"column {key!r} has {len(values)} values for {len(responses)} responses"
            )


def _as_score(value: Any) -> float | None:
    """Accepted score or ValueError (bad values are per-sample failures)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"returned {value!r}, not a number or None") from None
    if not math.isfinite(score):
        raise ValueError(f"returned {score}, not a finite number")
    return score


class SafeReward:
    """A reward function wrapped with per-sample error isolation (module docstring)."""

    def __init__(self, fn: RewardFn, name: str, on_error: OnError = 0.0) -> None:
        self.fn = fn
        self.name = name
        self.on_error = check_on_error(on_error)
        self.error_count = 0

    def __call__(self, responses: Sequence[str], **columns: Sequence[Any]) -> list[float | None]:
        responses = list(responses)
        _check_aligned(responses, columns)
        passed = _columns_for(self.fn, self.name, columns)
        try:
            raw = self.fn(responses, **passed)
        except Exception:
            return [self._one(i, responses, passed) for i in range(len(responses))]
        raw = list(self._checked_length(raw, len(responses)))
        scores = []
        for i, value in enumerate(raw):
            try:
                scores.append(_as_score(value))
            except ValueError as err:
                scores.append(self._failed(i, err))
        return scores

    def _checked_length(self, raw: Any, expected: int) -> Sequence[Any]:
        if isinstance(raw, str) or not hasattr(raw, "__len__") or len(raw) != expected:
            got = f"{len(raw)} values" if hasattr(raw, "__len__") else repr(type(raw).__name__)
            raise RewardError(
                f"reward {self.name!r} must return a list of {expected} scores "
                f"(one per response), got {got}"
            )
        return raw

    def _one(self, i: int, responses: list[str], columns: dict) -> float | None:
        row = {key: [values[i]] for key, values in columns.items()}
        try:
            raw = self.fn([responses[i]], **row)
        except Exception as err:
            return self._failed(i, err)
        value = self._checked_length(raw, 1)[0]
        try:
            return _as_score(value)
        except ValueError as err:
            return self._failed(i, err)

    def _failed(self, i: int, err: Exception) -> float | None:
        self.error_count += 1
        reason = f"{type(err).__name__}: {err}"
        if self.on_error == "raise":
            raise RewardError(f"reward {self.name!r} failed on sample {i}: {reason}") from err
        logger.warning(
            "reward %r failed on sample %d (%s); scored %r", self.name, i, reason, self.on_error
        )
        return self.on_error
