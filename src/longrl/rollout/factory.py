"""`worker.rollout.name` -> a rollout engine, behind the one `RolloutEngine` interface."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from longrl.config.root import RunConfig
from longrl.rollout.engine import RolloutEngine, TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams


def rollout_sampling_settings(config: RunConfig) -> SamplingParams:
    """The sampling settings every rollout of the run uses (seed and stop ids aside)."""
    rollout = config.worker.rollout
    return SamplingParams(
        n=rollout.n,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        max_new_tokens=config.data.max_response_length,
    )


def _builtin(config: RunConfig, model, pad_token_id: int, eos_token_ids) -> RolloutEngine:
    return TorchRolloutEngine(
        model,
        pad_token_id=pad_token_id,
        eos_token_ids=eos_token_ids,
        share_prefix=config.worker.rollout.share_prompt_prefix,
    )


def _vllm(config: RunConfig, model, pad_token_id: int, eos_token_ids) -> RolloutEngine:
    from longrl.rollout.vllm_engine import VllmRolloutEngine
    from longrl.rollout.vllm_inputs import choose_logprobs_mode

    mode = choose_logprobs_mode(rollout_sampling_settings(config))  # refuses before startup
    actor_model, rollout = config.worker.actor.model, config.worker.rollout
    if not actor_model.model_path:
        raise ValueError("worker.rollout.name=vllm needs worker.actor.model.model_path")
    seed = rollout.seed if rollout.seed is not None else config.trainer.seed
    return VllmRolloutEngine(
        model,
        actor_model.model_path,
        pad_token_id=pad_token_id,
        eos_token_ids=eos_token_ids,
        max_model_len=config.data.max_prompt_length + config.data.max_response_length,
        work_dir=Path(config.trainer.output_dir) / "vllm",
        dtype=actor_model.dtype,
        seed=seed,
        logprobs_mode=mode,
        enable_prefix_caching=rollout.share_prompt_prefix,
        trust_remote_code=actor_model.trust_remote_code,
    )


ENGINES: dict[str, Callable[..., RolloutEngine]] = {"builtin": _builtin, "vllm": _vllm}


def build_rollout_engine(
    config: RunConfig,
    model: torch.nn.Module,
    *,
    pad_token_id: int,
    eos_token_ids: tuple[int, ...],
) -> RolloutEngine:
    """The engine `config.worker.rollout.name` names, holding `model`'s current weights."""
    name = config.worker.rollout.name
    if name not in ENGINES:
        raise ValueError(f"worker.rollout.name={name!r}: choose one of {sorted(ENGINES)}")
    return ENGINES[name](config, model, pad_token_id, tuple(eos_token_ids))
