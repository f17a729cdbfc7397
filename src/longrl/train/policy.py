"""Load the policy (and reference) model with its processor from a local checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from longrl.config.data import DataConfig
from longrl.config.worker import ModelConfig
from longrl.devices import module_device, to_device
from longrl.models.inputs import is_mrope_model
from longrl.parallel.sequence import group_size
from longrl.parallel.sp_model import SequenceParallelLM
from longrl.vision.encode import encode_videos

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Policy:
    model: torch.nn.Module
    processor: Any  # a Qwen-VL processor, or a tokenizer for text-only models
    pad_token_id: int
    eos_token_ids: tuple[int, ...]
    # Sequence-parallel group (None: one rank): LM forwards are sharded over it and
    # each rank's vision tower encodes only its share of the frames.
    sp_group: Any = None
    gather_chunks: int = 1  # steps of the embedding all-gather (bounded memory)
    # worker.actor.reuse_video_embeddings: later passes of a step reuse the rollout's
    # video embeddings (False: every pass runs the vision tower again).
    reuse_video_embeds: bool = True
    _sequence_parallel: dict[int, torch.nn.Module] = field(default_factory=dict, repr=False)

    def language_model(self, model: torch.nn.Module | None = None) -> torch.nn.Module:
        """What LM forwards call: `model` (default the policy) itself, or wrapped in
        `SequenceParallelLM` over `sp_group` (one wrapper per model, reused)."""
        model = self.model if model is None else model
        if group_size(self.sp_group) == 1:
            return model
        if id(model) not in self._sequence_parallel:
            self._sequence_parallel[id(model)] = SequenceParallelLM(model, self.sp_group)
        return self._sequence_parallel[id(model)]

    def encode_videos(self, model_input, model: torch.nn.Module | None = None):
        """Embeddings of each distinct video of `model_input` by `model`'s (default the
        policy's) vision tower, frames split across `sp_group`; grad mode is the caller's.
        The pixels (built on the CPU) go to the tower's device; so do the embeddings."""
        model = self.model if model is None else model
        device = module_device(model)
        return encode_videos(
            model,
            to_device(model_input.pixel_values_videos, device),
            to_device(model_input.video_grid_thw, device),
            self.sp_group,
            num_chunks=self.gather_chunks,
        )

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def has_vision(self) -> bool:
        return is_mrope_model(self.model.config)

    @property
    def vision_trainable(self) -> bool:
        visual = vision_tower(self.model)
        return visual is not None and any(p.requires_grad for p in visual.parameters())

    @property
    def encodes_every_pass(self) -> bool:
        """Does every pass after the rollout run the vision tower again (a trainable tower,
        or reuse switched off), instead of reusing the rollout's embeddings?"""
        return self.vision_trainable or not self.reuse_video_embeds


def vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    inner = getattr(model, "model", None)
    return getattr(inner, "visual", None)


def require_model_path(model_cfg: ModelConfig) -> str:
    if not model_cfg.model_path:
        raise ValueError(
            "worker.actor.model.model_path is not set: point it at a local checkpoint directory "
            "(e.g. one written by `longrl tiny-model DIR`)"
        )
    return model_cfg.model_path


def load_policy(
    model_cfg: ModelConfig, data_cfg: DataConfig, device: torch.device | str = "cpu"
) -> Policy:
    """The policy on `device` (vision tower included): build the optimizer, and shard it
    with FSDP, after this, so both see the parameters where they will live."""
    from longrl.models.load import load_model, load_processor

    path = require_model_path(model_cfg)
    model = load_model(
        path, dtype=DTYPES[model_cfg.dtype], trust_remote_code=model_cfg.trust_remote_code
    ).to(device)
    overrides: dict[str, Any] = {}
    if is_mrope_model(model.config):
        overrides = {"min_pixels": data_cfg.min_pixels, "max_pixels": data_cfg.max_pixels}
        if data_cfg.video_total_pixels is not None:
            overrides["total_pixels"] = data_cfg.video_total_pixels
    processor = load_processor(path, **overrides)
    visual = vision_tower(model)
    if visual is not None and model_cfg.freeze_vision_tower:
        visual.requires_grad_(False)
    if model_cfg.enable_gradient_checkpointing:
        model.gradient_checkpointing_enable()
    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError(
            f"{path}: the tokenizer has no pad token; set pad_token in tokenizer_config.json"
        )
    return Policy(model, processor, pad, _eos_ids(model, tokenizer))


def load_reference(model_cfg: ModelConfig, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A frozen copy of the initial policy weights, on `device`."""
    from longrl.models.load import load_model

    model = load_model(require_model_path(model_cfg), dtype=DTYPES[model_cfg.dtype]).to(device)
    model.requires_grad_(False)
    return model.eval()


def _eos_ids(model: torch.nn.Module, tokenizer) -> tuple[int, ...]:
    ids: set[int] = set()
    generation = getattr(model, "generation_config", None)
    configured = getattr(generation, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return tuple(sorted(ids))
