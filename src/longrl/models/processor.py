"""A real `transformers.Qwen2_5_VLProcessor` (thin subclass) with torch-only image/video processors.

transformers' Qwen2-VL video processor (and `AutoProcessor` for Qwen2.5-VL) need
torchvision, which does not import beside the CPU torch build. The processors
here subclass transformers' base classes (so `ProcessorMixin` accepts them) and
delegate all pixel work to `longrl.models.preprocess`, which matches the official
output bitwise. Everything else -- placeholder expansion, `mm_token_type_ids`,
`second_per_grid_ts`, `apply_chat_template`, `save_pretrained` -- is the official
`Qwen2_5_VLProcessor` code; the subclass only relaxes a class-name check that
fails without torchvision and names the official classes in saved files.

Pixel bounds are always explicit: they come from the `VisionPreprocessConfig`
given here (by `load_processor`: call overrides, else the checkpoint's config
files, else the config defaults), never from the official class defaults, which
upscale small video frames to 128*28*28 pixels.

Frames are sampled by `longrl.video`, never here. Pass already-decoded frames and
say at which rate they were sampled, either with `fps=` (one number for all videos
of the call) or, per video, with the official `video_metadata=[sampled_video_metadata(T, fps)]`;
then second_per_grid_ts = temporal_patch_size / fps. Without either, the
official fallback of 24 fps applies and a warning is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import make_flat_list_of_images
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata, make_batched_metadata, make_batched_videos

from longrl.models.preprocess import (
    RESCALE_FACTOR,
    PreprocessError,
    VisionPreprocessConfig,
    image_grid_thw,
    preprocess_images,
    preprocess_video,
    video_grid_thw,
)

logger = logging.getLogger(__name__)

# The fps transformers assumes for frames given without one (VideoMetadata.sampled_fps).
OFFICIAL_FALLBACK_FPS = 24.0

# Keyword arguments the processor machinery may route to a sub-processor that do not
# change the pixels. Anything else (size, do_resize, min_pixels...) belongs in the
# VisionPreprocessConfig and is refused rather than silently ignored.
_HARMLESS_KWARGS = frozenset({"input_data_format", "data_format", "device", "do_convert_rgb"})

QWEN_CHAT_TEMPLATE = (
    # Qwen chat format: every turn is `<|im_start|>role\n...<|im_end|>\n`; a default
    # system turn is added when the conversation has none; each image/video content
    # part becomes `<|vision_start|><|image_pad|>/<|video_pad|><|vision_end|>`, which
    # the processor then expands to one pad per merged vision token. No whitespace
    # control is needed: the only whitespace in the template is the intended "\n"s.
    "{% set counts = namespace(image=0, video=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set counts.image = counts.image + 1 %}"
    "{% if add_vision_id %}Picture {{ counts.image }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set counts.video = counts.video + 1 %}"
    "{% if add_vision_id %}Video {{ counts.video }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


def _official_preprocessor_dict(cfg: VisionPreprocessConfig) -> dict[str, Any]:
    """The settings in the official Qwen2-VL processor JSON format (loadable by AutoProcessor)."""
    settings: dict[str, Any] = {
        "min_pixels": cfg.min_pixels,
        "max_pixels": cfg.max_pixels,
        "size": {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels},
        "patch_size": cfg.patch_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "merge_size": cfg.merge_size,
        "image_mean": list(cfg.image_mean),
        "image_std": list(cfg.image_std),
        "do_resize": True,
        "resample": 3,  # PIL bicubic
        "do_rescale": True,
        "rescale_factor": RESCALE_FACTOR,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    if cfg.total_pixels is not None:
        settings["total_pixels"] = cfg.total_pixels  # longrl's budget; official loaders ignore it
    return settings


def _refuse_pixel_kwargs(kwargs: dict[str, Any], who: str) -> None:
    changing = sorted(k for k, v in kwargs.items() if v is not None and k not in _HARMLESS_KWARGS)
    if changing:
        raise PreprocessError(
            f"{who}: per-call settings {changing} are not supported; set them in the "
            "VisionPreprocessConfig the processor was built with (build_processor / load_processor)"
        )


class TorchQwen2VLImageProcessor(BaseImageProcessor):
    """Qwen2-VL image processor without torchvision; pixels from `preprocess_images`."""

    model_input_names: ClassVar[list[str]] = ["pixel_values", "image_grid_thw"]

    def __init__(self, config: VisionPreprocessConfig | None = None, **_ignored: Any) -> None:
        super().__init__()
        self.config = config or VisionPreprocessConfig()
        self.patch_size = self.config.patch_size
        self.temporal_patch_size = self.config.temporal_patch_size
        self.merge_size = self.config.merge_size

    def fetch_images(self, image_url_or_urls):
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(x) for x in image_url_or_urls]
        if isinstance(image_url_or_urls, str):
            raise PreprocessError(
                f"image {image_url_or_urls!r}: pass decoded uint8 RGB arrays, not paths or URLs"
            )
        return image_url_or_urls

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        _refuse_pixel_kwargs(kwargs, type(self).__name__)
        arrays = [_image_to_uint8_array(image) for image in make_flat_list_of_images(images)]
        pixel_values, grid_thw = preprocess_images(arrays, self.config)
        return BatchFeature(
            data={"pixel_values": pixel_values, "image_grid_thw": grid_thw},
            tensor_type=return_tensors,
        )

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs=None) -> int:
        _, grid_h, grid_w = image_grid_thw(height, width, self.config)
        return grid_h * grid_w

    def to_dict(self) -> dict[str, Any]:
        return {
            **_official_preprocessor_dict(self.config),
            "image_processor_type": "Qwen2VLImageProcessor",
        }


class TorchQwen2VLVideoProcessor(VideoProcessorMixin):
    """Qwen2-VL video processor without torchvision; pixels from `preprocess_video`."""

    model_input_names: ClassVar[list[str]] = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, config: VisionPreprocessConfig | None = None, **_ignored: Any) -> None:
        super().__init__()
        self.config = config or VisionPreprocessConfig()
        self.patch_size = self.config.patch_size
        self.temporal_patch_size = self.config.temporal_patch_size
        self.merge_size = self.config.merge_size

    def preprocess(
        self,
        videos,
        video_metadata=None,
        fps: float | Sequence[float] | None = None,
        do_sample_frames: bool | None = None,
        return_metadata: bool = False,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        if do_sample_frames:
            raise PreprocessError(
                "TorchQwen2VLVideoProcessor does not sample frames: sample and decode them with "
                "longrl.video, then pass the frames with do_sample_frames=False and fps=<sampling fps>"
            )
        kwargs.pop("num_frames", None)  # only meaningful when sampling, which is refused above
        _refuse_pixel_kwargs(kwargs, type(self).__name__)
        if isinstance(videos, str) or (
            isinstance(videos, (list, tuple)) and any(isinstance(v, str) for v in videos)
        ):
            raise PreprocessError(
                "videos: pass decoded uint8 frames (see longrl.video), not paths or URLs"
            )
        # A list of 4-D videos; frame lists (PIL or arrays) are stacked by transformers.
        batch = make_batched_videos(videos)
        values, grids = [], []
        for video in batch:
            pixel_values, grid = preprocess_video(video, self.config)
            values.append(pixel_values)
            grids.append(grid)
        data: dict[str, Any] = {
            "pixel_values_videos": torch.cat(values),
            "video_grid_thw": torch.stack(grids),
        }
        # Qwen2.5-VL asks for metadata (its second_per_grid_ts come from the sampled fps).
        if return_metadata:
            data["video_metadata"] = _metadata_for(batch, video_metadata, fps)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def get_num_of_video_patches(
        self, num_frames: int, height: int, width: int, videos_kwargs=None
    ) -> int:
        t, h, w = video_grid_thw(num_frames, height, width, self.config)
        return t * h * w

    def to_dict(self) -> dict[str, Any]:
        return {
            **_official_preprocessor_dict(self.config),
            "do_sample_frames": False,
            "video_processor_type": "Qwen2VLVideoProcessor",
        }


def _metadata_for(batch: list, video_metadata, fps) -> list[VideoMetadata]:
    """One VideoMetadata per video whose `sampled_fps` is the rate the frames were taken at."""
    if video_metadata is not None:
        metadata = make_batched_metadata(batch, video_metadata=video_metadata)
        if len(metadata) != len(batch):
            raise PreprocessError(
                f"got {len(metadata)} video_metadata entries for {len(batch)} videos"
            )
        if fps is not None:
            given = _fps_list(fps, len(batch))
            for index, (meta, rate) in enumerate(zip(metadata, given, strict=True)):
                if not np.isclose(meta.sampled_fps, rate):
                    raise PreprocessError(
                        f"video {index}: fps={rate} disagrees with its video_metadata "
                        f"(sampled fps {meta.sampled_fps}); pass one of them"
                    )
        return metadata
    if fps is None:
        logger.warning(
            "videos given without fps: second_per_grid_ts assumes %s fps (the transformers "
            "fallback); pass fps=<rate the frames were sampled at>",
            OFFICIAL_FALLBACK_FPS,
        )
    rates = _fps_list(fps if fps is not None else OFFICIAL_FALLBACK_FPS, len(batch))
    return [
        VideoMetadata(total_num_frames=len(video), fps=rate, frames_indices=None)
        for video, rate in zip(batch, rates, strict=True)
    ]


def _fps_list(fps, count: int) -> list[float]:
    rates = [float(fps)] * count if isinstance(fps, (int, float)) else [float(r) for r in fps]
    if len(rates) != count:
        raise PreprocessError(f"got {len(rates)} fps values for {count} videos")
    if any(not r > 0 for r in rates):
        raise PreprocessError(f"fps must be > 0, got {rates}")
    return rates


def _image_to_uint8_array(image):
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        return np.asarray(image.convert("RGB"))
    return image


class _TorchProcessorMixin:
    """Makes an official Qwen-VL processor class accept our video processor and save cleanly.

    transformers checks sub-processor classes by name, and without torchvision the
    name `VideoProcessorMixin` cannot be resolved; the check is made directly here.
    Saved files name the official classes, so a saved checkpoint stays loadable by
    AutoProcessor where torchvision exists; the per-processor JSON files real Qwen
    checkpoints ship are written too, for loaders that read only those.
    """

    official_class_name: str

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"video_processor must be a VideoProcessorMixin, got {type(argument).__name__}"
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "processor_class": self.official_class_name}

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        if push_to_hub:
            raise ValueError("longrl never pushes to a hub; save locally and upload yourself")
        saved = super().save_pretrained(save_directory, **kwargs)
        out = Path(save_directory)
        # The tokenizer records the processor class it was saved with; name the official one.
        tokenizer_config = out / "tokenizer_config.json"
        if tokenizer_config.is_file():
            settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
            settings["processor_class"] = self.official_class_name
            _write_json(tokenizer_config, settings)
        tag = {"processor_class": self.official_class_name}
        _write_json(out / "preprocessor_config.json", {**self.image_processor.to_dict(), **tag})
        _write_json(
            out / "video_preprocessor_config.json", {**self.video_processor.to_dict(), **tag}
        )
        return saved


class TorchQwen2_5_VLProcessor(_TorchProcessorMixin, Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` with the torch-only image/video processors."""

    official_class_name = "Qwen2_5_VLProcessor"


class TorchQwen2VLProcessor(_TorchProcessorMixin, Qwen2VLProcessor):
    """`Qwen2VLProcessor` (no second_per_grid_ts) with the torch-only image/video processors."""

    official_class_name = "Qwen2VLProcessor"


# model_type -> processor class (Qwen2-VL and Qwen2.5-VL share the vision preprocessing).
PROCESSOR_CLASSES: dict[str, type] = {
    "qwen2_5_vl": TorchQwen2_5_VLProcessor,
    "qwen2_vl": TorchQwen2VLProcessor,
}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_processor(
    tokenizer,
    cfg: VisionPreprocessConfig | None = None,
    chat_template: str | None = None,
    image_cfg: VisionPreprocessConfig | None = None,
    model_type: str = "qwen2_5_vl",
) -> Qwen2_5_VLProcessor | Qwen2VLProcessor:
    """A `Qwen2_5_VLProcessor` (or, for model_type "qwen2_vl", a `Qwen2VLProcessor`)
    over `tokenizer` with torch-only image/video processors.

    cfg sets the video (and, unless image_cfg is given, the image) preprocessing.
    chat_template defaults to the tokenizer's, else to `QWEN_CHAT_TEMPLATE`.
    """
    if model_type not in PROCESSOR_CLASSES:
        raise PreprocessError(
            f"no vision processor for model_type {model_type!r}; supported: {sorted(PROCESSOR_CLASSES)}"
        )
    cfg = cfg or VisionPreprocessConfig()
    for token in ("<|video_pad|>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"):
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
            raise PreprocessError(
                f"tokenizer has no {token} token; a Qwen2-VL processor needs the Qwen vision tokens"
            )
    template = chat_template or getattr(tokenizer, "chat_template", None) or QWEN_CHAT_TEMPLATE
    return PROCESSOR_CLASSES[model_type](
        image_processor=TorchQwen2VLImageProcessor(image_cfg or cfg),
        tokenizer=tokenizer,
        video_processor=TorchQwen2VLVideoProcessor(cfg),
        chat_template=template,
    )


def sampled_video_metadata(num_frames: int, fps: float) -> dict[str, Any]:
    """`video_metadata` entry for frames already sampled at `fps` (the official call form)."""
    return {"total_num_frames": num_frames, "fps": fps, "frames_indices": None}
