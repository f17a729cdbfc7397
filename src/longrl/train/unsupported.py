"""Refuse settings whose feature is not built, instead of silently ignoring them."""

from __future__ import annotations

from collections.abc import Mapping


def refuse_unbuilt(pending: Mapping[str, bool], command: str) -> None:
    """Raise NotImplementedError naming every setting of `pending` that is switched on.

    pending: setting description -> whether the config asks for it.
    """
    asked = [name for name, on in pending.items() if on]
    if asked:
        raise NotImplementedError(
            f"not available in `{command}` yet: {asked}. Remove these settings "
            "(run `longrl eval` on checkpoints for validation)."
        )


def frozen_vision_for_cache(cache_dir: object, freeze_vision_tower: bool) -> dict[str, bool]:
    """The setting both trainers refuse: cached embeddings need a frozen ViT."""
    return {
        "data.cache_dir with a trainable vision tower (cached embeddings need a frozen ViT)": (
            cache_dir is not None and not freeze_vision_tower
        )
    }
