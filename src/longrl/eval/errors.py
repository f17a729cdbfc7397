"""The one error type of `longrl eval`: bad input, named with what to do."""

from __future__ import annotations


class EvalError(ValueError):
    """A model source, data file or setting the evaluator cannot use; the message says why."""
