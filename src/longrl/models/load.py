"""Load a local Hugging Face checkpoint directory: model, tokenizer, processor.

One code path for the tiny checkpoint (`longrl tiny-model`) and a real one such
as /models/Qwen2.5-VL-3B-Instruct: `config.json`'s `model_type` picks the
transformers class through a plain dict; files are read from the directory only
(`local_files_only`, never a hub); weights must be safetensors (no pickle); no
checkpoint code is ever run (no trust_remote_code).

The processor is built in code (AutoProcessor needs torchvision here) from the
directory's tokenizer, chat template and preprocessing settings. Preprocessing
settings are read, in order, from processor_config.json (transformers 5 saves),
video_preprocessor_config.json / preprocessor_config.json (what Qwen ships), and
keyword overrides replace any of them (`load_processor(path, max_pixels=...)`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from longrl.models.preprocess import VisionPreprocessConfig

logger = logging.getLogger(__name__)

# model_type in config.json -> transformers model class name.
MODEL_CLASSES: dict[str, str] = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2": "Qwen2ForCausalLM",
}
VISION_MODEL_TYPES = frozenset({"qwen2_5_vl", "qwen2_vl"})

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"))
_CONFIG_FIELDS = frozenset(f.name for f in fields(VisionPreprocessConfig))


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file, or holds something longrl cannot load."""


def checkpoint_model_type(path: str | Path) -> str:
    """`model_type` of the checkpoint at `path`, validated against MODEL_CLASSES."""
    config = _read_json(_checkpoint_dir(path) / "config.json", required=True)
    model_type = config.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}/config.json: model_type {model_type!r} is not supported; "
            f"supported: {sorted(MODEL_CLASSES)}"
        )
    return model_type


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """The model of a local checkpoint directory, in eval mode."""
    if trust_remote_code:
        raise CheckpointError(
            f"{path}: trust_remote_code=True is refused; longrl only loads transformers' own classes"
        )
    import transformers

    directory = _checkpoint_dir(path)
    model_type = checkpoint_model_type(directory)
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        pickled = [name for name in _PICKLE_WEIGHT_FILES if (directory / name).is_file()]
        hint = (
            f" (found {pickled[0]}: pickle weights are not loaded; convert them to safetensors)"
            if pickled
            else ""
        )
        raise CheckpointError(
            f"{directory}: no weights, expected one of {list(_WEIGHT_FILES)}{hint}"
        )
    model_class = getattr(transformers, MODEL_CLASSES[model_type])
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = model_class.from_pretrained(
        directory,
        dtype=dtype,
        local_files_only=True,
        trust_remote_code=False,
        use_safetensors=True,
        **kwargs,
    )
    return model.eval()


def load_tokenizer(path: str | Path):
    """The tokenizer of a local checkpoint directory (with its chat template, if any)."""
    from transformers import AutoTokenizer

    directory = _checkpoint_dir(path)
    if not any(all((directory / f).is_file() for f in files) for files in _TOKENIZER_FILE_SETS):
        raise CheckpointError(
            f"{directory}: no tokenizer, expected tokenizer.json (or vocab.json + merges.txt)"
        )
    tokenizer = AutoTokenizer.from_pretrained(
        directory, local_files_only=True, trust_remote_code=False
    )
    template = _read_chat_template(directory)
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def load_processor(path: str | Path, **overrides: Any):
    """The processor for a local checkpoint: a torch-only Qwen-VL processor, or, for a
    text-only model (qwen2), its tokenizer (as AutoProcessor would return).

    overrides: VisionPreprocessConfig fields (min_pixels, max_pixels, total_pixels, ...)
    replacing the checkpoint's settings for both videos and images.
    """
    from longrl.models.processor import build_processor

    directory = _checkpoint_dir(path)
    model_type = checkpoint_model_type(directory)
    tokenizer = load_tokenizer(directory)
    if model_type not in VISION_MODEL_TYPES:
        if overrides:
            raise CheckpointError(
                f"{directory}: model_type {model_type!r} has no vision input; "
                f"preprocessing overrides {sorted(overrides)} do not apply"
            )
        return tokenizer
    video_cfg, image_cfg = checkpoint_preprocess_configs(directory, **overrides)
    return build_processor(
        tokenizer,
        video_cfg,
        chat_template=tokenizer.chat_template,
        image_cfg=image_cfg,
        model_type=model_type,
    )


def checkpoint_preprocess_configs(
    path: str | Path, **overrides: Any
) -> tuple[VisionPreprocessConfig, VisionPreprocessConfig]:
    """(video, image) preprocessing configs of a checkpoint directory, overrides applied."""
    unknown = sorted(set(overrides) - _CONFIG_FIELDS)
    if unknown:
        raise CheckpointError(
            f"unknown preprocessing overrides {unknown}; valid: {sorted(_CONFIG_FIELDS)}"
        )
    directory = _checkpoint_dir(path)
    combined = _read_json(directory / "processor_config.json", required=False)
    legacy_image = _read_json(directory / "preprocessor_config.json", required=False)
    legacy_video = _read_json(directory / "video_preprocessor_config.json", required=False)
    image_settings = combined.get("image_processor") or legacy_image
    video_settings = combined.get("video_processor") or legacy_video or legacy_image
    if not image_settings and not video_settings:
        logger.warning(
            "%s has no preprocessor settings (processor_config.json / preprocessor_config.json); "
            "using VisionPreprocessConfig defaults %s",
            directory,
            VisionPreprocessConfig().to_dict(),
        )
    video_cfg = _config_from_settings(video_settings or image_settings, overrides, directory)
    image_cfg = _config_from_settings(image_settings or video_settings, overrides, directory)
    return video_cfg, image_cfg


def _config_from_settings(
    settings: dict[str, Any], overrides: dict[str, Any], directory: Path
) -> VisionPreprocessConfig:
    """Map official processor JSON keys to a VisionPreprocessConfig."""
    values: dict[str, Any] = {}
    size = settings.get("size") or {}
    for key, size_key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        value = settings.get(key, size.get(size_key))
        if value is not None:
            values[key] = int(value)
    for key in ("patch_size", "temporal_patch_size", "merge_size", "total_pixels"):
        if settings.get(key) is not None:
            values[key] = int(settings[key])
    for key in ("image_mean", "image_std"):
        if settings.get(key) is not None:
            values[key] = tuple(settings[key])
    values.update(overrides)
    try:
        return VisionPreprocessConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{directory}: preprocessing settings {values} are invalid: {err}"
        ) from err


def save_checkpoint(out_dir: str | Path, model, processor) -> Path:
    """Write model + processor (or tokenizer) so that load_model / load_processor read them back."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def _checkpoint_dir(path: str | Path) -> Path:
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory}: not a checkpoint directory (missing); build one with "
            "`longrl tiny-model DIR` or point to a local Hugging Face checkpoint"
        )
    return directory


def _read_json(file: Path, required: bool) -> dict[str, Any]:
    if not file.is_file():
        if required:
            raise CheckpointError(
                f"{file.parent}: no {file.name}; is this a Hugging Face checkpoint?"
            )
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}: invalid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_chat_template(directory: Path) -> str | None:
    """chat_template.jinja (transformers 5), else chat_template.json (older Qwen uploads)."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = _read_json(directory / "chat_template.json", required=False).get("chat_template")
    return template if isinstance(template, str) else None
