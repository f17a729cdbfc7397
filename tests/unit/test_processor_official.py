"""Our torch-only processor against the official torchvision-based Qwen2.5-VL processor.

Runs only where torchvision imports (conftest skips it elsewhere), e.g. a side venv:
    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch torchvision
    /tmp/tvenv/bin/pip install transformers==5.19.0 ... && pip install -e . --no-deps
    /tmp/tvenv/bin/python -m pytest tests/unit/test_processor_official.py
Same tokenizer, same explicit min/max pixels: identical input_ids and grids,
pixel values within 1e-5 (measured: bitwise equal).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longrl.models.preprocess import VisionPreprocessConfig
from longrl.models.processor import build_processor, sampled_video_metadata
from longrl.models.tiny import build_tiny_checkpoint, train_tiny_tokenizer

pytestmark = pytest.mark.torchvision

CFG = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=224 * 224)
PIXEL_TOLERANCE = 1e-5
VIDEO_SHAPES = [(4, 56, 56), (5, 61, 93), (3, 480, 640), (7, 33, 201), (2, 224, 224), (1, 97, 45)]
IMAGE_SHAPES = [(61, 93), (300, 301), (28, 28), (500, 120)]


def _official(tokenizer, cfg: VisionPreprocessConfig):
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    bounds = {"min_pixels": cfg.min_pixels, "max_pixels": cfg.max_pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**bounds),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**bounds, cap_pixels_per_frame=False),
        chat_template=tokenizer.chat_template,
    )


@pytest.fixture(scope="module")
def processors():
    tokenizer = train_tiny_tokenizer()
    return build_processor(tokenizer, CFG), _official(tokenizer, CFG)


def _frames(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def _prompt(processor, parts):
    content = [{"type": kind} for kind in parts] + [{"type": "text", "text": "What happens first?"}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("shape", VIDEO_SHAPES)
def test_video_matches_official(processors, shape):
    ours, official = processors
    frames = _frames(shape, seed=sum(shape))
    text = _prompt(ours, ["video"])
    assert text == _prompt(official, ["video"])
    got = ours(text=[text], videos=[frames], fps=2.0, return_tensors="pt")
    want = official(
        text=[text],
        videos=[frames],
        video_metadata=[sampled_video_metadata(shape[0], 2.0)],
        return_tensors="pt",
    )
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["mm_token_type_ids"], want["mm_token_type_ids"])
    assert torch.equal(got["video_grid_thw"], want["video_grid_thw"])
    assert got["second_per_grid_ts"].tolist() == want["second_per_grid_ts"].tolist() == [1.0]
    assert got["pixel_values_videos"].shape == want["pixel_values_videos"].shape
    diff = _max_diff(got["pixel_values_videos"], want["pixel_values_videos"])
    print(f"video {shape}: max abs diff {diff:.3g}")
    assert diff <= PIXEL_TOLERANCE


def test_images_and_mixed_batch_match_official(processors):
    ours, official = processors
    images = [_frames((1, *shape), seed=i)[0] for i, shape in enumerate(IMAGE_SHAPES)]
    videos = [_frames((5, 61, 93), seed=7), _frames((3, 100, 75), seed=8)]
    texts = [_prompt(ours, ["image", "video", "image"]), _prompt(ours, ["image", "video", "image"])]
    metadata = [sampled_video_metadata(5, 1.0), sampled_video_metadata(3, 4.0)]
    got = ours(
        text=texts,
        images=images,
        videos=videos,
        video_metadata=metadata,
        return_tensors="pt",
        padding=True,
    )
    want = official(
        text=texts,
        images=images,
        videos=videos,
        video_metadata=metadata,
        return_tensors="pt",
        padding=True,
    )
    for key in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "image_grid_thw",
        "video_grid_thw",
    ):
        assert torch.equal(got[key], want[key]), key
    assert got["second_per_grid_ts"].tolist() == want["second_per_grid_ts"].tolist() == [2.0, 0.5]
    image_diff = _max_diff(got["pixel_values"], want["pixel_values"])
    video_diff = _max_diff(got["pixel_values_videos"], want["pixel_values_videos"])
    print(f"images: max abs diff {image_diff:.3g}; two videos: {video_diff:.3g}")
    assert image_diff <= PIXEL_TOLERANCE and video_diff <= PIXEL_TOLERANCE


def test_official_autoprocessor_loads_the_tiny_checkpoint_identically(tmp_path):
    """The files we save are the official format: AutoProcessor reads them to the same settings."""
    from transformers import AutoProcessor

    from longrl.models.load import load_processor

    path = build_tiny_checkpoint(tmp_path / "tiny")
    official = AutoProcessor.from_pretrained(path, local_files_only=True)
    ours = load_processor(path)
    assert type(official).__name__ == "Qwen2_5_VLProcessor"
    frames = _frames((6, 150, 200), seed=3)
    text = _prompt(ours, ["video"])
    got = ours(text=[text], videos=[frames], fps=3.0, return_tensors="pt")
    want = official(
        text=[text],
        videos=[frames],
        video_metadata=[sampled_video_metadata(6, 3.0)],
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["video_grid_thw"], want["video_grid_thw"])
    assert _max_diff(got["pixel_values_videos"], want["pixel_values_videos"]) <= PIXEL_TOLERANCE
