"""FSDP pieces that need no process group: which modules become units, the stand-in tower
call, mini-batch bounds of a replica (the multi-process behaviour is in tests/dist)."""

from __future__ import annotations

import pytest
import torch

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.fsdp import language_model, shard_units
from longrl.train.update import mini_batch_bounds


@pytest.fixture(scope="module")
def tiny_vl():
    from longrl.models.tiny import build_tiny_model, train_tiny_tokenizer

    return build_tiny_model("qwen2_5_vl", train_tiny_tokenizer(vocab_size=512))


def test_units_are_layers_then_tower_then_tied_embeddings(tiny_vl):
    units = shard_units(tiny_vl)
    layers = list(tiny_vl.model.language_model.layers)
    assert [u[0] for u in units[: len(layers)]] == layers
    assert units[len(layers)] == [tiny_vl.model.visual]
    # Tied input/output embeddings share one parameter: one unit for both.
    assert units[-1] == [tiny_vl.model.language_model.embed_tokens, tiny_vl.lm_head]
    assert len(units) == len(layers) + 2
    # Every parameter outside the root's own (final norm) is in exactly one unit.
    in_units = {id(p) for unit in units for m in unit for p in m.parameters()}
    rest = [n for n, p in tiny_vl.named_parameters() if id(p) not in in_units]
    assert rest == ["model.language_model.norm.weight"]


def test_untied_text_model_has_its_embedding_alone():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    units = shard_units(model)
    assert len(units) == 3 + 1
    assert units[-1] == [model.model.embed_tokens]  # the untied head stays in the root
    assert language_model(model) is model.model


def test_a_model_without_a_decoder_is_refused():
    with pytest.raises(ParallelConfigError, match="no decoder"):
        shard_units(torch.nn.Linear(2, 2))


def test_stand_in_tower_call_encodes_one_clip_and_is_not_counted(tiny_vl):
    from longrl.train.timing import VisionCounter
    from longrl.vision.encode import FrameCounter
    from longrl.vision.placeholder import (
        forward_is_collective,
        is_placeholder_call,
        placeholder_embeddings,
        tower_class,
    )

    visual = tiny_vl.model.visual
    frames, calls = FrameCounter(visual), VisionCounter(visual)
    with torch.no_grad():
        out = placeholder_embeddings(tiny_vl.model)
    assert out.shape == (1, tiny_vl.config.text_config.hidden_size)
    assert frames.take() == 0
    assert calls.take() == {"vision/encode_calls": 0.0, "vision/items_encoded": 0.0}
    assert not is_placeholder_call(visual)  # the mark is cleared after the call
    assert not forward_is_collective(visual)  # not sharded: nothing to keep in step
    assert tower_class(visual) is type(visual)


@pytest.mark.parametrize(
    ("mini", "part", "count", "expected"),
    [(0, 2, 4, (0, 2)), (1, 2, 4, (2, 4)), (1, 2, 3, (2, 3)), (1, 2, 1, (1, 1)), (2, 2, 4, (4, 4))],
)
def test_mini_batch_bounds_of_a_replica(mini, part, count, expected):
    assert mini_batch_bounds(mini, part, count) == expected
