"""Qwen2-VL / Qwen2.5-VL pixel preprocessing in plain torch (no torchvision).

Frames are resized (bicubic, antialiased, on the uint8 frames, as the official
torchvision processor does), rescaled by 1/255, normalised with the CLIP
mean/std, padded in time to a multiple of the temporal patch by repeating the
last frame, and cut into patches in exactly the layout of transformers'
`Qwen2VLVideoProcessor.patchify`, so the vision tower sees identical input:

    rows    ordered (t, h_block, w_block, h_in_block, w_in_block), where a block is
            merge_size x merge_size patches (the patches one merged token covers);
    columns ordered (channel, t_in_patch, y_in_patch, x_in_patch).

An image is a one-frame video (padded to temporal_patch_size identical frames).

Pixel bounds. Each frame is resized to a multiple of patch_size * merge_size
("factor", 28) with min_pixels <= h*w <= max_pixels (`smart_resize`). Both bounds
are always explicit here: the official video processor's class defaults
(min 128*28*28) upscale small frames, which we never want silently.

Video budget (`total_pixels`). When set, a video of T frames (grid_t = ceil(T /
temporal_patch_size) temporal patches) gets a per-frame maximum of
min(max_pixels, total_pixels // grid_t), so that grid_t * h * w <= total_pixels,
i.e. the video costs at most total_pixels / factor**2 tokens. This counts pixels
per temporal patch, as qwen-vl-utils' `total_pixels` does, so budgets published
for Qwen2.5-VL carry over; unlike qwen-vl-utils the budget is never exceeded:
min_pixels is lowered to the budgeted maximum if needed, and a budget too small
for even factor**2 pixels per temporal patch is an error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

# OpenAI CLIP normalisation, used by every Qwen2-VL / Qwen2.5-VL checkpoint.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESCALE_FACTOR = 1 / 255

# The official smart_resize refuses extreme aspect ratios; so do we.
MAX_ASPECT_RATIO = 200

# Frames resized/normalised per step; bounds the float32 scratch memory of long videos
# (the output itself is preallocated once). Must be a multiple of temporal_patch_size.
_FRAMES_PER_CHUNK = 32


class PreprocessError(ValueError):
    """Frames or preprocessing settings that cannot be turned into vision patches."""


@dataclass(frozen=True)
class VisionPreprocessConfig:
    """How frames become vision patches. See the module docstring for the pixel rules."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 28 * 28
    max_pixels: int = 224 * 224
    total_pixels: int | None = None
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"):
            if getattr(self, name) <= 0:
                raise PreprocessError(
                    f"VisionPreprocessConfig.{name} must be > 0, got {getattr(self, name)}"
                )
        if self.min_pixels > self.max_pixels:
            raise PreprocessError(
                f"VisionPreprocessConfig: min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})"
            )
        if self.max_pixels < self.factor**2:
            raise PreprocessError(
                f"VisionPreprocessConfig: max_pixels ({self.max_pixels}) is below one merged token "
                f"({self.factor}x{self.factor} = {self.factor**2} pixels)"
            )
        if self.total_pixels is not None and self.total_pixels <= 0:
            raise PreprocessError(
                f"VisionPreprocessConfig.total_pixels must be > 0, got {self.total_pixels}"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise PreprocessError(
                "VisionPreprocessConfig: image_mean and image_std need 3 values (RGB)"
            )
        # Normalise lists (e.g. from JSON) to tuples so the config stays hashable.
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))

    @property
    def factor(self) -> int:
        """Side of the pixel square one merged vision token covers (28 for Qwen2.5-VL)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one row of pixel_values: 3 * temporal_patch_size * patch_size**2."""
        return 3 * self.temporal_patch_size * self.patch_size**2

    def to_dict(self) -> dict:
        return asdict(self)


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Target (h, w): multiples of `factor`, min_pixels <= h*w <= max_pixels, aspect kept.

    The rule of Qwen2-VL's processor (sizes must agree with it exactly, so Python's
    round-half-to-even is kept): round each side to the nearest multiple; if the
    area is too large, scale both sides down by sqrt(area / max_pixels) and floor
    to multiples; if too small, scale up by sqrt(min_pixels / area) and ceil.
    """
    if height <= 0 or width <= 0:
        raise PreprocessError(f"cannot resize a {height}x{width} frame")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise PreprocessError(
            f"frame {height}x{width} has aspect ratio above {MAX_ASPECT_RATIO}; crop it first"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def temporal_grid(num_frames: int, cfg: VisionPreprocessConfig) -> int:
    """Number of temporal patches: frames padded up to a multiple of temporal_patch_size."""
    if num_frames <= 0:
        raise PreprocessError(f"a video needs at least one frame, got {num_frames}")
    return -(-num_frames // cfg.temporal_patch_size)


def video_pixel_bounds(num_frames: int, cfg: VisionPreprocessConfig) -> tuple[int, int]:
    """(min_pixels, max_pixels) per frame for a video of num_frames, total_pixels applied."""
    if cfg.total_pixels is None:
        return cfg.min_pixels, cfg.max_pixels
    grid_t = temporal_grid(num_frames, cfg)
    budget_per_patch = cfg.total_pixels // grid_t
    if budget_per_patch < cfg.factor**2:
        raise PreprocessError(
            f"total_pixels={cfg.total_pixels} is too small for {num_frames} frames: each of the "
            f"{grid_t} temporal patches needs at least {cfg.factor**2} pixels "
            f"(total_pixels >= {grid_t * cfg.factor**2}); raise total_pixels or sample fewer frames"
        )
    max_pixels = min(cfg.max_pixels, budget_per_patch)
    return min(cfg.min_pixels, max_pixels), max_pixels


def video_grid_thw(
    num_frames: int, height: int, width: int, cfg: VisionPreprocessConfig
) -> tuple[int, int, int]:
    """Patch grid (t, h, w) a video of this size becomes, without touching pixels."""
    min_pixels, max_pixels = video_pixel_bounds(num_frames, cfg)
    h, w = smart_resize(height, width, cfg.factor, min_pixels, max_pixels)
    return temporal_grid(num_frames, cfg), h // cfg.patch_size, w // cfg.patch_size


def image_grid_thw(height: int, width: int, cfg: VisionPreprocessConfig) -> tuple[int, int, int]:
    """Patch grid (1, h, w) of an image; total_pixels does not apply to images."""
    h, w = smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
    return 1, h // cfg.patch_size, w // cfg.patch_size


def num_vision_tokens(grid_thw: Sequence[int], cfg: VisionPreprocessConfig) -> int:
    """Merged tokens (= placeholder pads in the prompt) for one grid: t*h*w / merge**2."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // cfg.merge_size**2


def second_per_grid_t(fps: float, cfg: VisionPreprocessConfig) -> float:
    """Seconds one temporal patch spans when frames were sampled at `fps`."""
    if not fps > 0:
        raise PreprocessError(f"sampling fps must be > 0, got {fps}")
    return cfg.temporal_patch_size / fps


def preprocess_video(frames, cfg: VisionPreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames [T,H,W,3] or [T,3,H,W] -> (pixel_values [N, patch_dim] float32, grid_thw [3]).

    N = grid_t * grid_h * grid_w. Accepts a torch tensor or numpy array.
    """
    video = _as_uint8_channels_first(frames, what="video")
    num_frames, _, height, width = video.shape
    grid_t, grid_h, grid_w = video_grid_thw(num_frames, height, width, cfg)
    pixel_values = _patchify_frames(video, grid_t, grid_h, grid_w, cfg)
    return pixel_values, torch.tensor([grid_t, grid_h, grid_w], dtype=torch.long)


def preprocess_images(
    images: Sequence, cfg: VisionPreprocessConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images, each [H,W,3] or [3,H,W] -> (pixel_values [N, patch_dim], grid_thw [n, 3])."""
    if len(images) == 0:
        raise PreprocessError("preprocess_images got no images")
    all_values, grids = [], []
    for index, image in enumerate(images):
        frame = _as_uint8_channels_first(_add_time_axis(image, index), what=f"image {index}")
        _, grid_h, grid_w = image_grid_thw(frame.shape[2], frame.shape[3], cfg)
        all_values.append(_patchify_frames(frame, 1, grid_h, grid_w, cfg))
        grids.append([1, grid_h, grid_w])
    return torch.cat(all_values), torch.tensor(grids, dtype=torch.long)


def _add_time_axis(image, index: int):
    if getattr(image, "ndim", None) != 3:
        raise PreprocessError(
            f"image {index}: expected a 3-D uint8 array [H,W,3] or [3,H,W], "
            f"got shape {tuple(getattr(image, 'shape', ()))}"
        )
    return image[None]


def _as_uint8_channels_first(frames, what: str) -> torch.Tensor:
    """Validate and return a uint8 [T,3,H,W] tensor (a view when already in that layout)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise PreprocessError(
            f"{what}: expected a uint8 torch tensor or numpy array, got {type(frames).__name__}"
        )
    if frames.dtype != torch.uint8:
        raise PreprocessError(
            f"{what}: expected uint8 pixels in 0..255, got dtype {frames.dtype}; decode frames as uint8 RGB"
        )
    if frames.ndim != 4:
        raise PreprocessError(
            f"{what}: expected 4 dims [T,H,W,3] or [T,3,H,W], got shape {tuple(frames.shape)}"
        )
    # Same precedence as transformers' channel inference: channels-first if dim 1 is 3.
    if frames.shape[1] == 3:
        return frames
    if frames.shape[3] == 3:
        return frames.permute(0, 3, 1, 2)
    raise PreprocessError(f"{what}: expected 3 RGB channels, got shape {tuple(frames.shape)}")


def _patchify_frames(
    video: torch.Tensor, grid_t: int, grid_h: int, grid_w: int, cfg: VisionPreprocessConfig
) -> torch.Tensor:
    """Resize, normalise, time-pad and patchify [T,3,H,W] uint8 into a preallocated output."""
    tps, ps, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    num_frames = video.shape[0]
    # Pad time by repeating the last frame (index list; the frame is not copied until used).
    frame_order = list(range(num_frames)) + [num_frames - 1] * (grid_t * tps - num_frames)
    rows_per_t = grid_h * grid_w
    out = torch.empty(grid_t * rows_per_t, cfg.patch_dim, dtype=torch.float32)
    mean, std = _fused_mean_std(cfg, video.device)
    chunk = max(tps, _FRAMES_PER_CHUNK // tps * tps)
    for start in range(0, len(frame_order), chunk):
        indices = frame_order[start : start + chunk]
        part = _resize_uint8(video[indices], grid_h * ps, grid_w * ps)
        # (x - mean*255) / (std*255) in float32: the official fused rescale+normalise.
        part = (part.to(torch.float32) - mean) / std
        t_here = len(indices) // tps
        patches = part.reshape(t_here, tps, 3, grid_h // m, m, ps, grid_w // m, m, ps)
        # -> (t, h_block, w_block, h_in, w_in, channel, t_in, y, x)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        first_row = start // tps * rows_per_t
        out[first_row : first_row + t_here * rows_per_t] = patches.reshape(-1, cfg.patch_dim)
    return out


def _resize_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic antialiased resize of uint8 [N,3,H,W], staying uint8 (rounded, clamped)."""
    if frames.shape[-2:] == (height, width):
        return frames
    if frames.device.type == "cpu":
        # torch's native uint8 bicubic+antialias kernel: the one torchvision uses on CPU.
        return F.interpolate(
            frames.contiguous(),
            size=(height, width),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
    # Elsewhere uint8 bicubic is unsupported: resize in float, then clamp and round back.
    resized = F.interpolate(
        frames.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.clamp_(0, 255).round_().to(torch.uint8)


def _fused_mean_std(
    cfg: VisionPreprocessConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Computed as the official processor does (tensor * (1 / rescale)) so values match bitwise.
    mean = torch.tensor(cfg.image_mean, device=device) * (1.0 / RESCALE_FACTOR)
    std = torch.tensor(cfg.image_std, device=device) * (1.0 / RESCALE_FACTOR)
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
