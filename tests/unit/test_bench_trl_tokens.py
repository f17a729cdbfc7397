"""The arithmetic benchmarks/trl_grpo.py relies on to compare longrl (a video) with TRL
(the frames as images) at equal visual tokens, checked against the processor itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from longrl.models.preprocess import (
    VisionPreprocessConfig,
    num_vision_tokens,
    preprocess_images,
    preprocess_video,
)

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "trl_grpo.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_trl_grpo", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("frames", [16, 64, 256, 5])
def test_half_the_frames_as_images_match_the_video_tokens(bench, frames):
    cfg = VisionPreprocessConfig()  # data defaults: 28*28 .. 224*224 pixels
    tokens = bench.visual_tokens(frames, 360, 640, cfg)
    # 640x360 -> 280x168 -> 20x12 patches -> 60 merged tokens per temporal patch.
    assert tokens["tokens_per_image"] == 60
    assert tokens["video_tokens"] == -(-frames // 2) * 60
    assert tokens["equal_token_images"] == -(-frames // 2)
    assert tokens["equal_token_image_tokens"] == tokens["video_tokens"]
    assert tokens["same_frame_image_tokens"] == frames * 60


def test_the_counts_are_the_processors(bench):
    """The same pixels through the real preprocessing: a video of T frames and T/2 images
    give the same visual tokens and vision-tower patches; T images give twice as many."""
    cfg = VisionPreprocessConfig(max_pixels=56 * 84)
    frames = np.random.default_rng(0).integers(0, 256, (6, 60, 90, 3), dtype=np.uint8)
    video_values, video_grid = preprocess_video(frames, cfg)
    half_values, half_grids = preprocess_images(list(frames[::2]), cfg)
    _, all_grids = preprocess_images(list(frames), cfg)
    tokens = bench.visual_tokens(6, 60, 90, cfg)
    assert num_vision_tokens(video_grid.tolist(), cfg) == tokens["video_tokens"]
    assert sum(num_vision_tokens(g, cfg) for g in half_grids.tolist()) == tokens["video_tokens"]
    assert video_values.shape == half_values.shape  # the vision tower sees as many patches
    assert sum(num_vision_tokens(g, cfg) for g in all_grids.tolist()) == 2 * tokens["video_tokens"]


def test_step_times_leave_out_the_warm_up(bench):
    times = bench.step_times((0.0, 0.0), [(10.0, 9.0), (12.0, 11.0), (15.0, 13.0), (17.0, 15.0)])
    assert times["step_s"] == [10.0, 2.0, 3.0, 2.0]
    assert times["median_step_s"] == 2.0
    assert times["median_cpu_s"] == 2.0
