"""The error the embedding cache raises; its message names the file or setting and the fix."""

from __future__ import annotations


class EmbeddingCacheError(ValueError):
    """The embedding cache cannot be used as configured, or holds an entry that does not fit."""
