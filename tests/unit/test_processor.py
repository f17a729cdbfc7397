"""The torch-only Qwen2.5-VL processor: placeholder expansion, fps, chat template, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

from longrl.models.load import checkpoint_preprocess_configs
from longrl.models.preprocess import PreprocessError, VisionPreprocessConfig, preprocess_video
from longrl.models.processor import build_processor, sampled_video_metadata
from longrl.models.tiny import train_tiny_tokenizer

CFG = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=224 * 224)
VIDEO_MESSAGES = [
    {
        "role": "user",
        "content": [
            {"type": "video", "video": "clip.mp4"},
            {"type": "text", "text": "Which color comes first?"},
        ],
    }
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return build_processor(tokenizer, CFG)


def _frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def test_is_a_real_qwen2_5_vl_processor(processor):
    assert isinstance(processor, Qwen2_5_VLProcessor)
    assert processor.video_processor.merge_size == 2
    assert processor.video_processor.temporal_patch_size == 2


def test_chat_template_renders_video_parts_and_generation_prompt(processor):
    text = processor.apply_chat_template(VIDEO_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        "Which color comes first?<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [
        {"role": "system", "content": "Be brief."},
        *VIDEO_MESSAGES,
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>B</answer>"}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "And?"}],
        },
    ]
    text = processor.apply_chat_template(with_system, tokenize=False, add_vision_id=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nVideo 1: <|vision_start|><|video_pad|><|vision_end|>"
        "Which color comes first?<|im_end|>\n"
        "<|im_start|>assistant\n<answer>B</answer><|im_end|>\n"
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Video 2: <|vision_start|><|video_pad|><|vision_end|>And?<|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("shape", "expected_grid"),
    [
        ((2, 56, 56), (1, 4, 4)),  # 4 tokens
        ((4, 224, 224), (2, 16, 16)),  # 32 tokens per frame: 128
        ((5, 61, 93), (3, 4, 6)),  # odd size, odd frame count: 18
        ((3, 28, 28), (2, 2, 2)),  # 2 tokens
        ((6, 480, 640), (3, 12, 18)),  # downscaled to 168x252: 162
    ],
)
def test_video_pads_expand_to_grid_tokens(processor, shape, expected_grid):
    text = processor.apply_chat_template(VIDEO_MESSAGES, tokenize=False, add_generation_prompt=True)
    out = processor(text=[text], videos=[_frames(*shape)], fps=2.0, return_tensors="pt")
    t, h, w = expected_grid
    assert out["video_grid_thw"].tolist() == [list(expected_grid)]
    pads = (out["input_ids"] == processor.video_token_id).sum().item()
    assert pads == t * h * w // 4
    assert out["pixel_values_videos"].shape == (t * h * w, 1176)
    assert (out["mm_token_type_ids"] == 2).sum().item() == pads
    base = processor.tokenizer(text)["input_ids"]
    assert out["input_ids"].shape[1] == len(base) - 1 + pads


def test_pixels_equal_preprocess_video(processor):
    frames = _frames(5, 61, 93)
    out = processor(text=["<|video_pad|>"], videos=[frames], fps=1.0, return_tensors="pt")
    expected, grid = preprocess_video(frames, CFG)
    assert torch.equal(out["pixel_values_videos"], expected)
    assert torch.equal(out["video_grid_thw"][0], grid)


def test_second_per_grid_ts_from_fps_or_metadata(processor):
    videos = [_frames(4, 56, 56), _frames(3, 56, 84, seed=1)]
    text = [
        "<|vision_start|><|video_pad|><|vision_end|><|vision_start|><|video_pad|><|vision_end|>"
    ]
    out = processor(text=text, videos=videos, fps=4.0, return_tensors="pt")
    assert out["second_per_grid_ts"].tolist() == [0.5, 0.5]
    # per-video rates: the official video_metadata form
    meta = [sampled_video_metadata(4, 2.0), sampled_video_metadata(3, 0.5)]
    out_meta = processor(text=text, videos=videos, video_metadata=meta, return_tensors="pt")
    assert out_meta["second_per_grid_ts"].tolist() == [1.0, 4.0]
    assert torch.equal(out["input_ids"], out_meta["input_ids"])
    with pytest.raises(PreprocessError, match="disagrees"):
        processor(text=text, videos=videos, video_metadata=meta, fps=2.0)


def test_missing_fps_uses_official_fallback_with_a_warning(processor, caplog):
    with caplog.at_level("WARNING", logger="longrl.models.processor"):
        out = processor(text=["<|video_pad|>"], videos=[_frames(2, 28, 28)], return_tensors="pt")
    assert out["second_per_grid_ts"].tolist() == pytest.approx([2 / 24])
    assert "without fps" in caplog.text


def test_images_expand_image_pads(processor):
    images = [_frames(1, 61, 93)[0], _frames(1, 28, 56, seed=2)[0]]
    text = [
        "<|vision_start|><|image_pad|><|vision_end|> and <|vision_start|><|image_pad|><|vision_end|>"
    ]
    out = processor(text=text, images=images, return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 4, 6], [1, 2, 4]]
    assert (out["input_ids"] == processor.image_token_id).sum().item() == 6 + 2
    assert out["pixel_values"].shape == (24 + 8, 1176)


def test_apply_chat_template_tokenizes_with_decoded_frames(processor):
    frames = _frames(4, 56, 56)
    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "video": frames}, {"type": "text", "text": "Hi"}],
        }
    ]
    out = processor.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        add_generation_prompt=True,
        do_sample_frames=False,
        fps=2.0,
        return_tensors="pt",
    )
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert (out["input_ids"] == processor.video_token_id).sum().item() == 8
    assert out["second_per_grid_ts"].tolist() == [1.0]


def test_sampling_and_per_call_pixel_settings_are_refused(processor):
    frames = _frames(4, 56, 56)
    with pytest.raises(PreprocessError, match="does not sample frames"):
        processor(text=["<|video_pad|>"], videos=[frames], do_sample_frames=True, fps=1.0)
    with pytest.raises(PreprocessError, match="not supported"):
        processor(text=["<|video_pad|>"], videos=[frames], fps=1.0, size={"longest_edge": 9999})
    with pytest.raises(PreprocessError, match="not paths"):
        processor(text=["<|video_pad|>"], videos=["clip.mp4"], fps=1.0)


def test_qwen2_vl_processor_variant(tokenizer):
    processor = build_processor(tokenizer, CFG, model_type="qwen2_vl")
    assert isinstance(processor, Qwen2VLProcessor)
    out = processor(text=["<|video_pad|>"], videos=[_frames(2, 56, 56)], return_tensors="pt")
    assert "second_per_grid_ts" not in out
    with pytest.raises(PreprocessError, match="model_type"):
        build_processor(tokenizer, CFG, model_type="llava")


def test_tokenizer_without_vision_tokens_is_refused():
    from transformers import Qwen2Tokenizer

    plain = Qwen2Tokenizer(vocab={"a": 0, "b": 1, "<|endoftext|>": 2}, merges=[])
    with pytest.raises(PreprocessError, match="video_pad"):
        build_processor(plain, CFG)


def test_save_writes_official_files_and_settings_round_trip(processor, tmp_path):
    cfg = VisionPreprocessConfig(min_pixels=56 * 56, max_pixels=112 * 112, total_pixels=50 * 784)
    image_cfg = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=448 * 448)
    saved = build_processor(processor.tokenizer, cfg, image_cfg=image_cfg)
    saved.save_pretrained(tmp_path)
    legacy = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert legacy["image_processor_type"] == "Qwen2VLImageProcessor"
    assert legacy["processor_class"] == "Qwen2_5_VLProcessor"
    assert (legacy["min_pixels"], legacy["max_pixels"]) == (784, 448 * 448)
    video = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert video["video_processor_type"] == "Qwen2VLVideoProcessor"
    assert video["size"] == {"shortest_edge": 3136, "longest_edge": 12544}
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["processor_class"] == "Qwen2_5_VLProcessor"
    assert (tmp_path / "chat_template.jinja").read_text() == saved.chat_template
    video_cfg, loaded_image_cfg = checkpoint_preprocess_configs(tmp_path)
    assert video_cfg == cfg
    assert loaded_image_cfg == image_cfg
    overridden, _ = checkpoint_preprocess_configs(tmp_path, max_pixels=224 * 224, total_pixels=None)
    assert (overridden.max_pixels, overridden.total_pixels) == (224 * 224, None)
