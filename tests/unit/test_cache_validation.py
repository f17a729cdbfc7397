"""Entries are validated against the prompt before use: misfits are refused, never served."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from longrl.vision.cache import EmbeddingCache, cache_for, entry_problems, require_frozen
from longrl.vision.errors import EmbeddingCacheError
from longrl.vision.store import DiskStore
from tests.unit.test_cache_store import CLIP, expected_for, make_entry


def test_a_fitting_entry_has_no_problems_and_each_misfit_is_named():
    entry = make_entry()
    assert entry_problems(entry, expected_for(entry)) == []
    cases = {
        "written for key": expected_for(entry, key="f" * 64),
        "frames": expected_for(entry, clip=replace(CLIP, num_frames=6)),
        "grid [2, 4, 8]": expected_for(entry, grid_thw=(2, 4, 8)),
        "second_per_grid_t": expected_for(entry, second_per_grid_t=1.0),
        "embedding shape (12, 16), expected (12, 32)": expected_for(entry, hidden=32),
        "dtype torch.float32, expected torch.bfloat16": expected_for(entry, dtype=torch.bfloat16),
    }
    for needle, expected in cases.items():
        problems = entry_problems(entry, expected)
        assert any(needle in p for p in problems), (needle, problems)
    # tokens = t*h*w / merge**2: a wrong row count for the grid is refused.
    short = make_entry(rows=11)
    (problem,) = entry_problems(short, expected_for(short))
    assert "embedding shape (11, 16), expected (12, 16) for grid [2, 4, 6]" in problem


def test_a_planted_wrong_shape_entry_is_refused_loudly_or_recomputed(tmp_path, caplog):
    planted = make_entry(rows=10)  # checksum valid, header right, but 10 rows for 12 tokens
    path = DiskStore(tmp_path).write(planted)
    want = expected_for(planted)
    strict = EmbeddingCache(tmp_path, memory_bytes=1 << 20)
    with pytest.raises(EmbeddingCacheError) as err:
        strict.get(want)
    message = str(err.value)
    assert str(path) in message and "(10, 16), expected (12, 16)" in message
    assert "data.cache_on_mismatch=recompute" in message
    lenient = EmbeddingCache(tmp_path, memory_bytes=1 << 20, on_mismatch="recompute")
    with caplog.at_level(logging.WARNING, logger="longrl.vision"):
        assert lenient.get(want) is None
    assert "does not fit the prompt" in caplog.text and lenient.stats["refused"] == 1
    assert want.key not in lenient.memory
    # Planted in memory (e.g. by a bug) it is refused just the same.
    lenient.memory.put(want.key, make_entry(rows=10))
    assert lenient.get(want) is None and want.key not in lenient.memory


def test_an_entry_under_another_key_is_not_served(tmp_path):
    store = DiskStore(tmp_path)
    entry = make_entry()
    store.write(replace(entry, key="f" * 64))  # a file for key f...
    path_f = store.path(entry.clip_key, "f" * 64)
    path_e = store.path(entry.clip_key, entry.key)
    path_e.write_bytes(path_f.read_bytes())  # ...copied to key e's name
    with pytest.raises(EmbeddingCacheError, match="written for key ffff"):
        EmbeddingCache(tmp_path, memory_bytes=0).get(expected_for(entry))


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.visual = torch.nn.Linear(2, 2)


def test_the_cache_refuses_a_trainable_vision_tower(tmp_path):
    model = _Model()
    with pytest.raises(EmbeddingCacheError, match="vision tower is trainable"):
        cache_for(model, tmp_path, memory_bytes=0, on_mismatch="raise")
    model.model.visual.requires_grad_(False)
    first = cache_for(model, tmp_path, memory_bytes=10, on_mismatch="raise")
    assert cache_for(model, tmp_path, memory_bytes=10, on_mismatch="raise") is first
    with pytest.raises(EmbeddingCacheError, match="no vision tower"):
        require_frozen(None)
