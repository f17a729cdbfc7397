"""SFT pieces without a model: config, targets, left-out records, buckets, loss, packing."""

import argparse
import math
import re
from pathlib import Path

import pytest
import torch

from longrl.commands import sft as sft_command
from longrl.config import ConfigError, dump_config, load_config
from longrl.config.data import DataConfig
from longrl.config.sft import SftConfig, SftSection
from longrl.data.sample import Sample
from longrl.models.inputs import ModelInput
from longrl.rewards.builtin import format_reward
from longrl.train.sft_data import (
    SftDataError,
    end_of_turn_id,
    select_trainable,
    target_text,
    target_token_ids,
)
from longrl.train.sft_forward import packed_positions
from longrl.train.sft_loss import length_buckets, token_cross_entropy

REPO = Path(__file__).resolve().parents[2]


class CharTokenizer:
    """One token per character; <|im_end|> is id 0."""

    unk_token_id = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def convert_tokens_to_ids(self, token):
        return 0 if token == "<|im_end|>" else None


def sample(reasoning=None, answer="B", pid="p"):
    return Sample(
        problem_id=pid,
        prompt="<video>Q?",
        answer=answer,
        videos=("v.mp4",),
        reasoning=reasoning,
        source=f"sft.jsonl:{pid}",
    )


# --- config ---------------------------------------------------------------------------


def test_defaults_validate_round_trip_and_keep_sft_optim_defaults(tmp_path):
    config = load_config(None, [], SftConfig)
    assert config.optim.lr == 1e-5 and config.optim.lr_scheduler == "cosine"
    assert config.optim.lr_warmup_ratio == 0.03
    assert config.model.freeze_vision_tower and not config.sft.packing
    recipe = tmp_path / "r.yaml"
    recipe.write_text(dump_config(config))
    assert load_config(recipe, [], SftConfig) == config
    # A partial optim section keeps the SFT defaults for the keys it does not set.
    recipe.write_text("optim: {lr: 1.0e-3}\n")
    partial = load_config(recipe, [], SftConfig)
    assert partial.optim.lr == 1e-3 and partial.optim.lr_scheduler == "cosine"


def test_bad_keys_and_batch_sizes_are_refused_with_the_key_named():
    with pytest.raises(ConfigError, match=re.escape("Did you mean sft.micro_batch_size")):
        load_config(None, ["sft.micro_batch=2"], SftConfig)
    with pytest.raises(ConfigError, match=r"sft.micro_batch_size \(4\) > sft.batch_size \(2\)"):
        load_config(None, ["sft.batch_size=2", "sft.micro_batch_size=4"], SftConfig)
    with pytest.raises(ConfigError, match="worker"):
        load_config(None, ["worker.actor.optim.lr=1e-3"], SftConfig)


def test_tiny_recipe_validates_and_points_at_the_tiny_paths():
    config = load_config(REPO / "configs" / "tiny_sft.yaml", [], SftConfig)
    assert config.model.model_path == "runs/tiny/model"
    assert config.data.train_files == "runs/tiny/data/sft.jsonl"
    assert config.data.thinking


def test_command_prints_the_resolved_config_and_rejects_bad_keys(capsys):
    parser = argparse.ArgumentParser()
    sft_command.add_arguments(parser)
    args = parser.parse_args(
        [str(REPO / "configs" / "tiny_sft.yaml"), "sft.batch_size=4", "--print-config"]
    )
    assert sft_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "batch_size: 4" in printed and "model_path: runs/tiny/model" in printed
    assert sft_command.run(parser.parse_args(["sft.bogus=1"])) == 2
    assert "sft.bogus" in capsys.readouterr().err


# --- targets --------------------------------------------------------------------------


def test_target_is_reasoning_then_answer_or_answer_only():
    assert (
        target_text(sample(" It is red. "), True) == "<think>It is red.</think><answer>B</answer>"
    )
    assert target_text(sample("It is red."), False) == "<answer>B</answer>"
    assert target_text(sample(None), True) is None
    assert target_text(sample("   "), True) is None
    assert target_text(sample(None), False) == "<answer>B</answer>"
    # empty_think: an answer-only record keeps the thinking format, which the format
    # reward accepts (an empty think block is allowed).
    empty = target_text(sample(None), True, empty_think=True)
    assert empty == "<think></think><answer>B</answer>"
    assert target_text(sample("  "), True, empty_think=True) == empty
    assert format_reward([empty]) == [1.0]
    assert target_text(sample("r"), True, empty_think=True) == "<think>r</think><answer>B</answer>"


def test_target_tokens_end_with_the_end_of_turn_token():
    tokenizer = CharTokenizer()
    assert target_token_ids("ab", tokenizer, end_of_turn_id(tokenizer)) == [97, 98, 0]

    class NoEndOfTurn(CharTokenizer):
        def convert_tokens_to_ids(self, token):
            return None

    with pytest.raises(SftDataError, match=re.escape("no <|im_end|> token")):
        end_of_turn_id(NoEndOfTurn())


def test_records_without_a_target_are_left_out_and_counted():
    tokenizer = CharTokenizer()
    # "<answer>B</answer>" is 18 characters; + <|im_end|> = 19 tokens; with reasoning "r" 35.
    samples = [sample("r", pid="ok"), sample(None, pid="none"), sample("r" * 10, pid="long")]
    data = DataConfig(max_response_length=35)
    kept, left_out = select_trainable(samples, tokenizer, data, SftSection())
    assert [s.problem_id for s in kept] == ["ok"]
    assert left_out == {"no_reasoning": 1, "target_too_long": 1}
    # Answer-only targets need no reasoning.
    kept, left_out = select_trainable(
        samples, tokenizer, DataConfig(thinking=False, max_response_length=19), SftSection()
    )
    assert len(kept) == 3 and not left_out
    with pytest.raises(SftDataError, match=re.escape("sft.jsonl:none: no `reasoning`")):
        select_trainable(samples, tokenizer, data, SftSection(missing_reasoning="raise"))
    with pytest.raises(
        SftDataError, match=r"sft\.jsonl:long: target of 44 tokens > data\.max_response_length=35"
    ):
        select_trainable(
            [samples[2]],
            tokenizer,
            DataConfig(max_response_length=35, on_bad_sample="raise"),
            SftSection(),
        )
    kept, left_out = select_trainable(
        samples, tokenizer, data, SftSection(missing_reasoning="empty_think")
    )
    assert [s.problem_id for s in kept] == ["ok", "none"]
    assert left_out == {"target_too_long": 1}
    with pytest.raises(SftDataError, match=re.escape("data.thinking=true every record needs")):
        select_trainable([samples[1]], tokenizer, data, SftSection())


# --- batching and loss maths ----------------------------------------------------------


def test_length_buckets_group_similar_lengths_longest_first():
    assert length_buckets([5, 100, 7, 90, 6], 2) == [[1, 3], [2, 4], [0]]
    assert length_buckets([3, 3, 3], 1) == [[0], [1], [2]]
    assert length_buckets([4, 9], 8) == [[1, 0]]
    with pytest.raises(ValueError):
        length_buckets([1], 0)


def test_token_cross_entropy_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = token_cross_entropy(logits, labels)
    # p = (3/4, 1/4): -log(3/4) - log(1/4) = log(16/3).
    assert float(loss.summed.detach()) == pytest.approx(math.log(16 / 3))
    assert (loss.correct, loss.count) == (1, 2)
    loss.summed.backward()
    # d/dlogits = softmax - onehot.
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.25, 0.25], [0.75, -0.75]]))
    with pytest.raises(ValueError, match="do not match"):
        token_cross_entropy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def _model_input(mask, positions):
    mask = torch.tensor(mask)
    return ModelInput(
        input_ids=torch.zeros_like(mask),
        attention_mask=mask,
        position_ids=positions,
        rope_deltas=torch.zeros(mask.shape[0], 1, dtype=torch.long),
        prompt_lengths=mask.sum(-1),
        prompt_width=1,
        pad_token_id=0,
    )


def test_packed_positions_keep_each_samples_positions_and_mark_its_start():
    mask = [[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]]
    # M-RoPE: the builder's 3-D positions are kept; row 0 counts 0.. per sample.
    rope = torch.tensor([[[1, 0, 1, 5, 1], [0, 6, 1, 1, 1]]]).expand(3, -1, -1).clone()
    rope[1, 0, 2] = 9
    packed = packed_positions(_model_input(mask, rope))
    assert packed.shape == (4, 1, 5)
    assert packed[0, 0].tolist() == [0, 1, 2, 0, 1]
    assert packed[1, 0].tolist() == [0, 1, 5, 0, 6]
    assert packed[2, 0].tolist() == [0, 9, 5, 0, 6]
    # Text-only: the 1-D positions already restart per sample.
    text = torch.tensor([[1, 0, 1, 2, 1], [0, 1, 1, 1, 1]])
    assert packed_positions(_model_input(mask, text)).tolist() == [[0, 1, 2, 0, 1]]


def test_run_refuses_missing_paths_and_unbuilt_features_before_loading_anything(tmp_path):
    from longrl.train.sft import run_sft

    out = f"trainer.output_dir={tmp_path / 'run'}"
    with pytest.raises(ValueError, match=re.escape("model.model_path is not set")):
        run_sft(load_config(None, [out], SftConfig))
    model = f"model.model_path={tmp_path}"
    with pytest.raises(ValueError, match=re.escape("data.train_files is not set")):
        run_sft(load_config(None, [out, model], SftConfig))
    missing = f"data.train_files={tmp_path / 'nope.jsonl'}"
    with pytest.raises(FileNotFoundError, match=re.escape("nope.jsonl: no such file")):
        run_sft(load_config(None, [out, model, missing], SftConfig))
    with pytest.raises(NotImplementedError, match=re.escape("data.cache_dir")):
        cached = [f"data.cache_dir={tmp_path}", "model.freeze_vision_tower=false"]
        run_sft(load_config(None, [out, model, *cached], SftConfig))
    assert not (tmp_path / "run").exists()
