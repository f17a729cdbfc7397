"""`worker.*`: the policy (actor), the rollout engine, the reference model, rewards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from longrl.config.base import Section


class ModelConfig(Section):
    model_path: str | None = Field(
        None, description="Local checkpoint directory (Hugging Face layout). No hub downloads."
    )
    trust_remote_code: bool = Field(
        False, description="Off unless you trust the checkpoint's code."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype (CPU: float32)."
    )
    freeze_vision_tower: bool = Field(
        True, description="Frozen ViT lets every pass of a step reuse one encoding per video."
    )
    enable_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )


class OptimConfig(Section):
    lr: float = Field(1e-6, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    lr_warmup_ratio: float = Field(
        0.0, ge=0, le=1, description="Linear warm-up over this fraction of all steps."
    )
    lr_warmup_steps: int | None = Field(
        None, ge=0, description="Overrides lr_warmup_ratio when set."
    )
    lr_scheduler: Literal["constant", "cosine"] = Field(
        "constant", description="Schedule after warm-up."
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of lr.")


class FsdpConfig(Section):
    enable: bool = Field(
        False,
        description=(
            "Shard the policy and reference weights, gradients and AdamW state over every "
            "process with FSDP2 (fully_shard; docs/distributed.md). Off: each process holds "
            "a full copy. No effect in one process."
        ),
    )


class ActorConfig(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    global_batch_size: int = Field(
        8, gt=0, description="Prompts per optimizer step (mini-batch), across data-parallel ranks."
    )
    micro_batch_size_per_device_for_update: int = Field(
        4, gt=0, description="Sequences per forward/backward in the update (gradient accumulation)."
    )
    micro_batch_size_per_device_for_experience: int = Field(
        16, gt=0, description="Sequences per forward in the old/ref log-prob passes."
    )
    ppo_epochs: int = Field(1, gt=0, description="Passes over each rollout batch.")
    max_grad_norm: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    clip_ratio_low: float = Field(0.2, ge=0, description="PPO ratio lower bound 1 - low.")
    clip_ratio_high: float = Field(0.2, ge=0, description="> clip_ratio_low is DAPO's clip-higher.")
    clip_ratio_dual: float = Field(
        3.0, gt=1, description="Dual-clip bound for negative advantages."
    )
    loss_agg_mode: Literal[
        "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
    ] = Field("token-mean", description="How per-token losses are averaged.")
    padding_free: bool = Field(
        True,
        description="Accepted for EasyR1 scripts; no effect yet (groups share prompts instead).",
    )
    ulysses_sequence_parallel_size: int = Field(
        1, gt=0, description="Sequence-parallel group size (Ulysses all-to-all)."
    )
    share_prompt_prefix: bool = Field(
        True, description="Run each group's prompt once in log-prob/update forwards."
    )
    reuse_video_embeddings: bool = Field(
        True,
        description=(
            "Encode each video once per step (for rollout) and reuse its embeddings in the "
            "old/reference log-prob passes and every update micro-batch (a trainable vision "
            "tower is still re-run in the update, with gradients). false re-runs the vision "
            "tower in every pass that needs it, as peers do: the same numbers, more compute "
            "(the baseline of benchmarks/ablation.py); refused with data.cache_dir."
        ),
    )

    @model_validator(mode="after")
    def _prefix_sharing_needs_the_kv_cache(self) -> ActorConfig:
        # The shared forward hands the prompt's KV cache to the responses, and
        # transformers drops KV caches inside gradient-checkpointed layers in training
        # (measured: the update crashes), so the two cannot be combined yet.
        if self.share_prompt_prefix and self.model.enable_gradient_checkpointing:
            raise ValueError(
                "worker.actor.model.enable_gradient_checkpointing=true needs "
                "worker.actor.share_prompt_prefix=false (the prefix-shared forward reuses "
                "the prompt's KV cache, which gradient-checkpointed layers drop in training)"
            )
        return self


class RolloutConfig(Section):
    name: Literal["builtin", "vllm"] = Field("builtin", description="Rollout engine.")
    n: int = Field(8, gt=0, description="Responses sampled per prompt (group size).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(-1, description="-1 disables top-k.")
    seed: int | None = Field(None, description="Sampling seed; default derives from trainer.seed.")
    share_prompt_prefix: bool = Field(
        True, description="Prefill each prompt once and fork its KV cache n ways."
    )
    num_chunk_seq: int = Field(
        1, gt=0, description="Split large all-gathers into this many chunks (Long-RL's knob)."
    )


class RefConfig(Section):
    enable: bool | None = Field(
        None, description="Reference model; default: loaded iff the KL term is enabled."
    )


class RewardConfig(Section):
    functions: dict[str, float] = Field(
        default_factory=lambda: {"accuracy": 1.0, "format": 0.5},
        description="Built-in reward name -> weight.",
    )
    reward_function: str | None = Field(
        None, description="User reward `path/to/file.py:name`, added with weight 1.0."
    )
    on_error: float | Literal["raise"] = Field(
        0.0, description="Score given when a reward function raises on a sample, or 'raise'."
    )


class WorkerConfig(Section):
    actor: ActorConfig = Field(default_factory=ActorConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    ref: RefConfig = Field(default_factory=RefConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
