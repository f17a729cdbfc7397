"""The one error type of longrl.parallel: a layout or input that cannot run as asked."""

from __future__ import annotations


class ParallelConfigError(ValueError):
    """Raised before any collective, identically on every rank, with what to change."""
