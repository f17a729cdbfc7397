"""The offline tiny checkpoint: determinism, exact save/reload, tokenizer, loader errors, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2ForCausalLM

from longrl.models.load import (
    CheckpointError,
    checkpoint_model_type,
    load_model,
    load_processor,
    load_tokenizer,
    save_checkpoint,
)
from longrl.models.tiny import REPLY_TAG_TOKENS, SPECIAL_TOKENS, build_tiny_checkpoint

CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2_5_vl", seed=0)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_model(tiny_dir)


@pytest.fixture(scope="module")
def processor(tiny_dir):
    return load_processor(tiny_dir)


def _video_inputs(processor, frames: int = 4, side: int = 56):
    text = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "video"}, {"type": "text", "text": "Which color is first?"}],
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    video = np.random.default_rng(0).integers(0, 256, size=(frames, side, side, 3), dtype=np.uint8)
    return processor(text=[text], videos=[video], fps=2.0, return_tensors="pt")


def test_checkpoint_has_the_files_of_a_real_one(tiny_dir):
    assert {p.name for p in tiny_dir.iterdir()} == CHECKPOINT_FILES
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    text = config["text_config"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
    assert (text["num_attention_heads"], text["num_key_value_heads"]) == (4, 2)
    video = json.loads((tiny_dir / "video_preprocessor_config.json").read_text())
    assert (video["min_pixels"], video["max_pixels"]) == (28 * 28, 112 * 112)


def test_same_seed_gives_byte_identical_files_across_processes(tiny_dir, tmp_path):
    # A separate process: tokenizer training (Rust) and weight init must not depend on
    # per-process state such as hash seeds.
    code = "import sys; from longrl.models.tiny import build_tiny_checkpoint as b; b(sys.argv[1], seed=0)"
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "again")], check=True, capture_output=True
    )
    for name in CHECKPOINT_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def test_other_seed_changes_weights_only(tiny_dir, tmp_path):
    other = build_tiny_checkpoint(tmp_path / "seed1", seed=1)
    assert (other / "model.safetensors").read_bytes() != (
        tiny_dir / "model.safetensors"
    ).read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()


def test_model_matches_tokenizer_and_runs_on_a_video(tiny_dir, model, processor):
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    tokenizer = processor.tokenizer
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert model.config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert model.generation_config.eos_token_id == [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]
    inputs = _video_inputs(processor)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_save_and_reload_gives_identical_logits(model, processor, tmp_path):
    inputs = _video_inputs(processor, frames=5, side=61)
    save_checkpoint(tmp_path / "copy", model, processor)
    reloaded = load_model(tmp_path / "copy")
    reloaded_processor = load_processor(tmp_path / "copy")
    again = _video_inputs(reloaded_processor, frames=5, side=61)
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    assert torch.equal(inputs["pixel_values_videos"], again["pixel_values_videos"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**again).logits)


def test_tokenizer_round_trip_and_single_id_special_tokens(processor):
    tokenizer = processor.tokenizer
    text = "<think>A red circle at 00:12, then 3 blue squares.</think><answer>B</answer>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    for token in (*SPECIAL_TOKENS, *REPLY_TAG_TOKENS):
        assert len(tokenizer(token)["input_ids"]) == 1, token
    assert tokenizer.decode(ids, skip_special_tokens=True) == text  # tags are not special
    chat = tokenizer("<|im_start|>user\nhi<|im_end|>")["input_ids"]
    assert chat[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.decode(chat, skip_special_tokens=True) == "user\nhi"
    # special tokens come right after the BPE vocabulary, in Qwen's order
    special_ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert special_ids == list(range(special_ids[0], special_ids[0] + len(SPECIAL_TOKENS)))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_text_only_qwen2_checkpoint(tmp_path):
    path = build_tiny_checkpoint(tmp_path / "qwen2", kind="qwen2")
    model = load_model(path)
    tokenizer = load_processor(path)
    assert isinstance(model, Qwen2ForCausalLM)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Which color?"}],
        add_generation_prompt=True,
        return_tensors="pt",
    )["input_ids"]
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_loader_errors_name_the_directory_and_what_is_missing(tiny_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(CheckpointError, match=f"{broken}: no config.json"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        checkpoint_model_type(broken)
    shutil.copy(tiny_dir / "config.json", broken / "config.json")
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(broken)
    (broken / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="pickle weights are not loaded"):
        load_model(broken)
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_processor(broken)
    with pytest.raises(CheckpointError, match="trust_remote_code"):
        load_model(tiny_dir, trust_remote_code=True)
    with pytest.raises(CheckpointError, match="unknown preprocessing overrides"):
        load_processor(tiny_dir, max_pixel=1)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        checkpoint_model_type(broken)


def test_load_processor_applies_overrides(tiny_dir):
    processor = load_processor(tiny_dir, max_pixels=56 * 56, total_pixels=10 * 784)
    config = processor.video_processor.config
    assert (config.min_pixels, config.max_pixels, config.total_pixels) == (784, 3136, 7840)
    assert load_tokenizer(tiny_dir).chat_template == processor.chat_template


def test_loads_the_file_layout_qwen_ships(tiny_dir, tmp_path):
    """Hub Qwen2.5-VL dirs have only preprocessor_config.json (flat min/max_pixels) and
    chat_template.json; the loader reads the same settings from them."""
    real = tmp_path / "real_layout"
    shutil.copytree(tiny_dir, real)
    template = (real / "chat_template.jinja").read_text()
    for name in ("processor_config.json", "video_preprocessor_config.json", "chat_template.jinja"):
        (real / name).unlink()
    (real / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    settings = json.loads((real / "preprocessor_config.json").read_text())
    del settings["size"]
    settings.update(min_pixels=3136, max_pixels=12845056)
    (real / "preprocessor_config.json").write_text(json.dumps(settings))
    processor = load_processor(real)
    assert processor.chat_template == template
    for config in (processor.video_processor.config, processor.image_processor.config):
        assert (config.min_pixels, config.max_pixels) == (3136, 12845056)


def test_cli_writes_checkpoint_and_reports_parameters(tmp_path, capsys):
    from longrl.cli import main

    assert main(["tiny-model", str(tmp_path / "cli"), "--kind", "qwen2", "--seed", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str((tmp_path / "cli").resolve())
    parameters = sum(p.numel() for p in load_model(tmp_path / "cli").parameters())
    assert out[1] == f"qwen2: {parameters:,} parameters"
