"""Embedding-cache keys: every component the embedding depends on changes the key."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from longrl.config.data import DataConfig
from longrl.data.sample import Sample
from longrl.models.preprocess import VisionPreprocessConfig
from longrl.vision.keys import (
    SamplingSettings,
    clip_key,
    content_hash,
    effective_sampling,
    entry_key,
    preprocess_fingerprint,
    vision_fingerprint,
)

BASE_SAMPLING = SamplingSettings(num_frames=None, fps=2.0, min_frames=4, max_frames=64)


def _sample(**fields) -> Sample:
    return Sample(problem_id="p", prompt="<video> q", answer="A", videos=("v.mp4",), **fields)


def test_per_record_sampling_overrides_win():
    data = DataConfig(fps=2.0, num_frames=None, min_frames=4, max_frames=64)
    assert effective_sampling(_sample(), data) == BASE_SAMPLING
    assert effective_sampling(_sample(fps=0.5), data).fps == 0.5
    by_count = effective_sampling(_sample(num_frames=8), data)
    assert (by_count.num_frames, by_count.fps) == (8, None)
    # A record's fps drops the config's num_frames (the record asked for a rate).
    counted = DataConfig(fps=None, num_frames=16, max_frames=64)
    assert effective_sampling(_sample(), counted).num_frames == 16
    assert effective_sampling(_sample(fps=1.0), counted) == SamplingSettings(None, 1.0, 4, 64)


def test_content_hash_follows_the_bytes_not_the_path(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"frames" * 1000)
    b.write_bytes(b"frames" * 1000)
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 64
    before = content_hash(a)
    a.write_bytes(b"frames" * 999 + b"FRAMES")  # same size, new content, new mtime
    os.utime(a, ns=(1, 1))  # even with an old mtime, the inode/size/mtime identity moved on
    assert content_hash(a) != before
    with pytest.raises(FileNotFoundError):
        content_hash(tmp_path / "missing.mp4")


def test_every_sampling_field_changes_the_clip_key():
    content = "0" * 64
    base = clip_key(content, BASE_SAMPLING)
    variants = [
        replace(BASE_SAMPLING, fps=1.0),
        replace(BASE_SAMPLING, fps=None, num_frames=16),
        replace(BASE_SAMPLING, min_frames=8),
        replace(BASE_SAMPLING, max_frames=32),
    ]
    keys = {clip_key(content, v) for v in variants}
    assert base not in keys and len(keys) == len(variants)
    assert clip_key("1" * 64, BASE_SAMPLING) != base
    assert clip_key(content, BASE_SAMPLING) == base  # deterministic
    # "Neither fps nor num_frames" means the decoder's default rate, keyed as such.
    default = replace(BASE_SAMPLING, fps=None)
    assert clip_key(content, default) == clip_key(content, replace(BASE_SAMPLING, fps=2.0))


def test_every_preprocessing_field_changes_the_entry_key():
    cfg = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=112 * 112)
    base = preprocess_fingerprint(cfg)
    variants = [
        replace(cfg, min_pixels=56 * 56),
        replace(cfg, max_pixels=224 * 224),
        replace(cfg, total_pixels=10**6),
        replace(cfg, patch_size=16),
        replace(cfg, temporal_patch_size=1),
        replace(cfg, merge_size=1),
        replace(cfg, image_mean=(0.5, 0.5, 0.5)),
        replace(cfg, image_std=(0.5, 0.5, 0.5)),
    ]
    prints = {preprocess_fingerprint(v) for v in variants}
    assert base not in prints and len(prints) == len(variants)
    entries = {entry_key("c" * 64, p, "v" * 64) for p in prints | {base}}
    assert len(entries) == len(variants) + 1
    assert entry_key("c" * 64, base, "v" * 64) != entry_key("d" * 64, base, "v" * 64)
    assert entry_key("c" * 64, base, "v" * 64) != entry_key("c" * 64, base, "w" * 64)


class _Config:
    def __init__(self, depth: int) -> None:
        self.depth = depth

    def to_dict(self):
        return {"depth": self.depth}


def _tower(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))


def test_vision_fingerprint_follows_every_weight_dtype_and_config():
    tower, same = _tower(), _tower()
    base = vision_fingerprint(tower, _Config(2))
    assert vision_fingerprint(same, _Config(2)) == base  # equal weights, another module
    assert vision_fingerprint(tower, _Config(3)) != base
    assert vision_fingerprint(_tower(seed=1), _Config(2)) != base
    with torch.no_grad():
        same[1].bias[3] += 1e-6  # one element of one tensor, in place
    assert vision_fingerprint(same, _Config(2)) != base  # the memo notices in-place changes
    assert vision_fingerprint(_tower().to(torch.bfloat16), _Config(2)) != base
    fresh = _tower()
    fresh.load_state_dict(same.state_dict())  # weights loaded into a tower seen before
    vision_fingerprint(fresh, _Config(2))
    fresh.load_state_dict(tower.state_dict())
    assert vision_fingerprint(fresh, _Config(2)) == base
