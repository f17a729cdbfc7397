"""Torch-only Qwen2-VL preprocessing: sizes, values and patch layout checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from longrl.models.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    PreprocessError,
    VisionPreprocessConfig,
    image_grid_thw,
    num_vision_tokens,
    preprocess_images,
    preprocess_video,
    second_per_grid_t,
    smart_resize,
    video_grid_thw,
    video_pixel_bounds,
)

CFG = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=224 * 224)


@pytest.mark.parametrize(
    ("size", "bounds", "expected"),
    [
        ((28, 28), (784, 50176), (28, 28)),
        ((100, 200), (784, 50176), (112, 196)),  # round(3.57)=4, round(7.14)=7
        ((480, 640), (784, 50176), (168, 252)),  # scaled down by sqrt(307200/50176)
        ((20, 20), (3136, 50176), (56, 56)),  # scaled up by sqrt(3136/400) = 2.8, ceil
        ((70, 70), (784, 10**6), (56, 56)),  # 70/28 = 2.5 rounds half to even: 2
        ((42, 42), (784, 10**6), (56, 56)),  # 1.5 rounds to 2
    ],
)
def test_smart_resize_hand_cases(size, bounds, expected):
    assert smart_resize(*size, 28, *bounds) == expected


def test_smart_resize_refuses_extreme_aspect_ratio():
    with pytest.raises(PreprocessError, match="aspect ratio"):
        smart_resize(10, 2100, 28, 784, 50176)


def test_constant_two_frame_28px_video_has_known_normalised_value():
    frames = torch.full((2, 28, 28, 3), 128, dtype=torch.uint8)
    pixel_values, grid = preprocess_video(frames, CFG)
    assert grid.tolist() == [1, 2, 2]
    assert pixel_values.shape == (4, 3 * 2 * 14 * 14)
    per_channel = pixel_values.view(4, 3, 2 * 14 * 14)
    for c in range(3):
        expected = (128 / 255 - CLIP_MEAN[c]) / CLIP_STD[c]  # R: 0.0205061 / 0.2686295
        assert torch.allclose(per_channel[:, c], torch.tensor(expected), atol=1e-6)
    assert per_channel[0, 0, 0].item() == pytest.approx(0.076336, abs=1e-6)


def _reference_patches(frames_thwc: np.ndarray, cfg: VisionPreprocessConfig) -> np.ndarray:
    """Loop-by-patch layout of an un-resized video, written from the layout description."""
    ps, tps, m = cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size
    norm = (frames_thwc.astype(np.float64) / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    t_total, h, w, _ = norm.shape
    gh, gw = h // ps, w // ps
    rows = np.zeros((t_total // tps * gh * gw, 3 * tps * ps * ps))
    for gt in range(t_total // tps):
        for ph in range(gh):
            for pw in range(gw):
                # merged blocks in raster order, then the m x m patches inside a block
                block = (ph // m) * (gw // m) + pw // m
                row = gt * gh * gw + block * m * m + (ph % m) * m + pw % m
                patch = norm[
                    gt * tps : (gt + 1) * tps, ph * ps : (ph + 1) * ps, pw * ps : (pw + 1) * ps
                ]
                rows[row] = patch.transpose(3, 0, 1, 2).reshape(-1)  # (channel, t, y, x)
    return rows


def test_patch_layout_matches_loop_reference_and_pads_time_with_last_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 56, 84, 3), dtype=np.uint8)  # no resize at these bounds
    pixel_values, grid = preprocess_video(frames, CFG)
    assert grid.tolist() == [2, 4, 6]
    padded = np.concatenate([frames, frames[-1:]])  # 3 frames -> 4 by repeating the last
    expected = _reference_patches(padded, CFG)
    np.testing.assert_allclose(pixel_values.numpy(), expected, atol=2e-6)


def test_channels_first_and_last_give_identical_output():
    frames = torch.randint(0, 256, (4, 61, 93, 3), dtype=torch.uint8)
    last, grid_last = preprocess_video(frames, CFG)
    first, grid_first = preprocess_video(frames.permute(0, 3, 1, 2).contiguous(), CFG)
    assert torch.equal(grid_last, grid_first)
    assert torch.equal(last, first)


def test_long_video_is_processed_in_chunks_identically_to_per_frame_pairs():
    frames = torch.randint(0, 256, (71, 30, 45, 3), dtype=torch.uint8)  # > one 32-frame chunk, odd
    pixel_values, grid = preprocess_video(frames, CFG)
    assert grid.tolist() == [36, 2, 4]  # 30x45 -> 28x56
    rows = grid[1] * grid[2]
    for t in (0, 17, 35):
        pair = frames[2 * t : 2 * t + 2]
        if len(pair) == 1:
            pair = torch.cat([pair, pair])
        alone, _ = preprocess_video(pair, CFG)
        assert torch.equal(pixel_values[t * rows : (t + 1) * rows], alone)


def test_resize_is_bicubic_antialiased_on_uint8():
    frames = torch.randint(0, 256, (2, 100, 150, 3), dtype=torch.uint8)
    pixel_values, grid = preprocess_video(frames, CFG)
    h, w = grid[1].item() * 14, grid[2].item() * 14
    resized = torch.nn.functional.interpolate(
        frames.permute(0, 3, 1, 2).contiguous(), size=(h, w), mode="bicubic", antialias=True
    )
    assert resized.dtype == torch.uint8
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
    normalised = (resized.float() - mean) / std
    # first row = top-left patch of the top-left merged block, frames 0 and 1
    first_row = normalised[:, :, :14, :14].permute(1, 0, 2, 3).reshape(-1)
    torch.testing.assert_close(pixel_values[0], first_row, atol=1e-6, rtol=0)


def test_images_are_one_frame_videos_repeated_in_time():
    image = torch.randint(0, 256, (61, 93, 3), dtype=torch.uint8)
    other = torch.randint(0, 256, (28, 56, 3), dtype=torch.uint8)
    pixel_values, grids = preprocess_images([image, other], CFG)
    assert grids.tolist() == [[1, 4, 6], [1, 2, 4]]
    as_video, _ = preprocess_video(image[None], CFG)
    assert torch.equal(pixel_values[:24], as_video)
    halves = pixel_values.view(-1, 3, 2, 196)
    assert torch.equal(halves[:, :, 0], halves[:, :, 1])


def test_total_pixels_budget_caps_tokens_per_video():
    frames = torch.randint(0, 256, (10, 224, 224, 3), dtype=torch.uint8)
    budget = 5 * 4 * 28 * 28  # 5 temporal patches x 4 tokens
    cfg = VisionPreprocessConfig(min_pixels=28 * 28, max_pixels=224 * 224, total_pixels=budget)
    assert video_pixel_bounds(10, cfg) == (784, 3136)
    pixel_values, grid = preprocess_video(frames, cfg)
    assert grid.tolist() == [5, 4, 4]
    assert pixel_values.shape == (5 * 4 * 4, 1176)
    t, h, w = grid.tolist()
    assert t * h * w * 14 * 14 <= budget
    assert num_vision_tokens(grid, cfg) == budget // (28 * 28) == 20
    # without the budget the same video costs 16x more
    assert num_vision_tokens(video_grid_thw(10, 224, 224, CFG), CFG) == 320


def test_total_pixels_lowers_min_pixels_and_never_exceeds_budget():
    cfg = VisionPreprocessConfig(min_pixels=112 * 112, max_pixels=224 * 224, total_pixels=64 * 784)
    for frames in (2, 7, 31, 64):
        t, h, w = video_grid_thw(frames, 333, 517, cfg)
        assert t == math.ceil(frames / 2)
        assert t * h * w * 14 * 14 <= cfg.total_pixels
    with pytest.raises(PreprocessError, match="too small for 130 frames"):
        video_grid_thw(130, 333, 517, cfg)


def test_grid_helpers_and_time_per_patch():
    assert image_grid_thw(61, 93, CFG) == (1, 4, 6)
    assert video_grid_thw(5, 61, 93, CFG) == (3, 4, 6)
    assert num_vision_tokens((3, 4, 6), CFG) == 18
    assert second_per_grid_t(2.0, CFG) == 1.0
    assert second_per_grid_t(4.0, CFG) == 0.5


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.zeros(2, 28, 28, 3, dtype=torch.float32), "uint8"),
        (torch.zeros(28, 28, 3, dtype=torch.uint8), "4 dims"),
        (torch.zeros(2, 28, 28, 4, dtype=torch.uint8), "3 RGB channels"),
        ([[0]], "torch tensor or numpy"),
    ],
)
def test_bad_frames_raise_clear_errors(frames, message):
    with pytest.raises(PreprocessError, match=message):
        preprocess_video(frames, CFG)


def test_bad_config_raises():
    with pytest.raises(PreprocessError, match="min_pixels"):
        VisionPreprocessConfig(min_pixels=10_000, max_pixels=5_000)
    with pytest.raises(PreprocessError, match="below one merged token"):
        VisionPreprocessConfig(min_pixels=100, max_pixels=500)
