"""The encode path through the cache: hit and miss build the uncached prompt, exactly."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from longrl.config.data import DataConfig
from longrl.config.worker import ModelConfig
from longrl.data.dataset import load_dataset
from longrl.data.sample import Sample
from longrl.train.policy import load_policy
from longrl.train.prompts import draw_decodable, encode_prompts
from longrl.vision.errors import EmbeddingCacheError
from longrl.vision.store import DiskStore

MODEL_INPUT_FIELDS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "rope_deltas",
    "prompt_lengths",
    "video_grid_thw",
    "second_per_grid_ts",
)


@pytest.fixture(scope="module")
def policy(tiny_vl_checkpoint):
    policy = load_policy(ModelConfig(model_path=str(tiny_vl_checkpoint)), DataConfig())
    policy.model.eval()
    return policy


@pytest.fixture(scope="module")
def samples(synth_data):
    loaded, _ = load_dataset(synth_data / "rl.jsonl", synth_data)
    first, second, third = loaded[:3]
    two_videos = replace(
        third,
        problem_id="two-videos",
        prompt="<video> then <video> " + third.prompt.replace("<video>", ""),
        videos=(first.videos[0], third.videos[0]),
    )
    # `first` twice: one video shown by two prompts is looked up and encoded once.
    return [first, second, two_videos, first]


class Counts:
    """Decodes and vision-tower calls made while it is active."""

    def __init__(self, monkeypatch, policy) -> None:
        import longrl.video.decode as decode

        self.decodes = 0
        self.vit_calls = 0
        real = decode.read_frames

        def counting(*args, **kwargs):
            self.decodes += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(decode, "read_frames", counting)
        self._hook = policy.model.model.visual.register_forward_hook(self._count)

    def _count(self, *_):
        self.vit_calls += 1

    def close(self):
        self._hook.remove()


def _encode(policy, samples, data, monkeypatch):
    counts = Counts(monkeypatch, policy)
    items = iter(samples)
    try:
        drawn = draw_decodable(lambda: next(items), len(samples), data, Counter())
        encoded = encode_prompts(policy, drawn, data, Counter())
    finally:
        counts.close()
        monkeypatch.undo()
    return encoded, counts


def _assert_same(a, b):
    for name in MODEL_INPUT_FIELDS:
        x, y = getattr(a.model_input, name), getattr(b.model_input, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    assert a.model_input.video_rows == b.model_input.video_rows
    assert a.model_input.prompt_width == b.model_input.prompt_width
    assert len(a.video_embeds) == len(b.video_embeds)
    for x, y in zip(a.video_embeds, b.video_embeds, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y)


def test_miss_and_hit_give_the_uncached_input_and_a_hit_skips_decode_and_vit(
    policy, samples, tmp_path, monkeypatch
):
    plain = DataConfig(fps=2.0, max_frames=16)
    cached = plain.model_copy(update={"cache_dir": str(tmp_path / "cache")})
    reference, counts = _encode(policy, samples, plain, monkeypatch)
    assert (counts.decodes, counts.vit_calls) == (5, 1)
    assert reference.model_input.video_rows == ((0,), (1,), (2, 3), (4,))
    assert reference.model_input.pixel_values_videos is not None

    cold, counts = _encode(policy, samples, cached, monkeypatch)
    assert (counts.decodes, counts.vit_calls) == (5, 1)  # 3 distinct videos in one ViT call
    _assert_same(cold, reference)
    entries = sorted((tmp_path / "cache").glob("v1/*/*/*.safetensors"))
    assert len(entries) == 3

    # A fresh in-memory layer (another budget = another cache object): served from disk.
    fresh = cached.model_copy(update={"cache_memory_bytes": 12345})
    warm, counts = _encode(policy, samples, fresh, monkeypatch)
    assert (counts.decodes, counts.vit_calls) == (0, 0)
    _assert_same(warm, reference)
    assert warm.model_input.pixel_values_videos is None  # nothing decoded, nothing to hold
    again, counts = _encode(policy, samples, fresh, monkeypatch)  # from memory now
    assert (counts.decodes, counts.vit_calls) == (0, 0)
    _assert_same(again, reference)


def test_changed_vision_weights_or_preprocessing_miss_the_cache(
    policy, tiny_vl_checkpoint, samples, tmp_path, monkeypatch
):
    data = DataConfig(fps=2.0, max_frames=16, cache_dir=str(tmp_path / "cache"))
    one = samples[:1]
    _encode(policy, one, data, monkeypatch)
    clip_dir = next((tmp_path / "cache").glob("v1/*/*"))
    assert len(list(clip_dir.glob("*.safetensors"))) == 1

    other = load_policy(
        ModelConfig(model_path=str(tiny_vl_checkpoint)),
        DataConfig(max_pixels=56 * 56),  # preprocessing: another grid, another entry
    )
    encoded, counts = _encode(other, one, data, monkeypatch)
    # Known frames (no decode at draw time), but a miss: decoded then, and encoded.
    assert (counts.decodes, counts.vit_calls) == (1, 1)
    assert len(list(clip_dir.glob("*.safetensors"))) == 2

    with torch.no_grad():
        other.model.model.visual.merger.mlp[0].bias[0] += 0.5  # vision weights changed
    changed, counts = _encode(other, one, data, monkeypatch)
    assert (counts.decodes, counts.vit_calls) == (1, 1)
    assert len(list(clip_dir.glob("*.safetensors"))) == 3
    assert not torch.equal(changed.video_embeds[0], encoded.video_embeds[0])


def test_a_planted_wrong_entry_is_refused_and_a_trainable_tower_is_refused(
    policy, samples, tmp_path, monkeypatch
):
    data = DataConfig(fps=2.0, max_frames=16, cache_dir=str(tmp_path / "cache"))
    one = samples[:1]
    _encode(policy, one, data, monkeypatch)
    (path,) = (tmp_path / "cache").glob("v1/*/*/*.safetensors")
    store = DiskStore(tmp_path / "cache")
    entry = store.read(path.parent.name, path.stem)
    store.write(replace(entry, embeds=entry.embeds[:-1]))  # one token short, valid file
    fresh = data.model_copy(update={"cache_memory_bytes": 0})
    with pytest.raises(EmbeddingCacheError, match=r"does not fit the prompt.*embedding shape"):
        _encode(policy, one, fresh, monkeypatch)
    lenient = fresh.model_copy(update={"cache_on_mismatch": "recompute"})
    encoded, counts = _encode(policy, one, lenient, monkeypatch)
    assert counts.vit_calls == 1  # re-encoded, and the bad file replaced
    assert torch.equal(store.read(path.parent.name, path.stem).embeds, encoded.video_embeds[0])

    policy.model.model.visual.requires_grad_(True)
    try:
        with pytest.raises(EmbeddingCacheError, match="vision tower is trainable"):
            _encode(policy, one, data, monkeypatch)
    finally:
        policy.model.model.visual.requires_grad_(False)


def test_unreadable_videos_are_skipped_as_without_the_cache(policy, tmp_path, monkeypatch):
    missing = Sample(problem_id="gone", prompt="<video> q", answer="A", videos=("/nope.mp4",))
    data = DataConfig(cache_dir=str(tmp_path / "cache"))
    items = iter([missing])
    skipped = Counter()
    with pytest.raises(RuntimeError, match="had decodable videos"):
        draw_decodable(lambda: next(items, missing), 1, data, skipped, max_attempts=2)
    assert skipped == Counter({"video_error": 2})
