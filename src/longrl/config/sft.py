"""`longrl sft` recipes: chain-of-thought SFT, one file = one `SftConfig`.

The sections reuse the RL schema wherever the concept is the same, so a key
means one thing in both recipes:

    data.*     DataConfig, as in RL. SFT reads: train_files, video_root,
               prompt_key / answer_key / video_key, thinking (the prompt template
               AND the target: `<think>reasoning</think><answer>X</answer>` when
               true, `<answer>X</answer>` when false), fps / num_frames /
               min_frames / max_frames, min_pixels / max_pixels /
               video_total_pixels, max_prompt_length + filter_overlong_prompts
               (prompt, video included), max_response_length (the target, i.e.
               the assistant reply incl. its end-of-turn token: longer ones are
               skipped and counted, never truncated, since a cut target would
               teach the model not to stop), shuffle, seed, on_bad_sample.
               RL-only keys (rollout_batch_size, val_*) are ignored.
    model.*    ModelConfig (RL: worker.actor.model.*): model_path, dtype,
               freeze_vision_tower (default true: the ViT runs once per video
               per step, without gradients), enable_gradient_checkpointing.
    optim.*    OptimConfig (RL: worker.actor.optim.*): AdamW + warm-up + decay.
               SFT defaults: lr 1e-5, 3% warm-up, cosine.
    trainer.*  TrainerConfig, as in RL: output_dir, max_steps / total_epochs,
               seed, logger, save_freq, save_limit, resume (auto/none/path).
    sft.*      what only SFT has (below).

Loss: token-mean cross-entropy over the assistant target tokens only (the
prompt and the video are never scored), normalised by the target-token count
of the whole optimizer step, so gradient accumulation equals one big batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from longrl.config.base import Section
from longrl.config.data import DataConfig
from longrl.config.trainer import TrainerConfig
from longrl.config.worker import ModelConfig, OptimConfig


class SftSection(Section):
    batch_size: int = Field(
        8, gt=0, description="Samples per optimizer step (split into micro-batches)."
    )
    micro_batch_size: int = Field(
        2, gt=0, description="Samples per forward/backward (gradient accumulation)."
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    packing: bool = Field(
        False,
        description=(
            "Pack each micro-batch into one padding-free row (block-diagonal attention, "
            "per-sample positions). Off: rows are length-bucketed and padded. Packing pays "
            "with varlen attention kernels (flash-attention); with CPU sdpa the attention "
            "runs dense over the packed row."
        ),
    )
    missing_reasoning: Literal["skip", "raise", "empty_think"] = Field(
        "skip",
        description=(
            "With data.thinking, what a record without `reasoning` becomes: left out at load "
            "time and counted (skip), a stop (raise), or the target `<think></think>"
            "<answer>X</answer>` (empty_think: an answer-only record keeps the thinking "
            "format with an empty think block, as hybrid-thinking SFT data does). A bare "
            "`<answer>` target under the thinking prompt would teach the model to ignore "
            "the prompt's format, so there is no such option."
        ),
    )


class SftOptimConfig(OptimConfig):
    """OptimConfig with SFT defaults (the keys are the same; a partial recipe keeps these)."""

    lr: float = Field(1e-5, gt=0, description="AdamW peak learning rate.")
    lr_warmup_ratio: float = Field(
        0.03, ge=0, le=1, description="Linear warm-up over this fraction of all steps."
    )
    lr_scheduler: Literal["constant", "cosine"] = Field(
        "cosine", description="Schedule after warm-up."
    )


class SftConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: SftOptimConfig = Field(default_factory=SftOptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    sft: SftSection = Field(default_factory=SftSection)

    @model_validator(mode="after")
    def _cross_section(self) -> SftConfig:
        if self.sft.micro_batch_size > self.sft.batch_size:
            raise ValueError(
                f"sft.micro_batch_size ({self.sft.micro_batch_size}) > sft.batch_size "
                f"({self.sft.batch_size}); lower micro_batch_size or raise batch_size"
            )
        return self
