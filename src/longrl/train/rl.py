"""`longrl rl`: the GRPO-family training loop, top to bottom.

Per step: draw prompts -> decode their videos -> encode each video once ->
roll out n responses per prompt (prompt prefilled once per group) -> rewards ->
(DAPO: keep groups with signal, top up) -> reference/old log-probs
(prefix-shared) -> advantages -> PPO update -> metrics -> checkpoint.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from longrl.algos import GroupBatchAccumulator
from longrl.config import RunConfig, dump_config
from longrl.config.data import DataConfig
from longrl.config.trainer import TrainerConfig
from longrl.rewards.combine import combine
from longrl.rollout.engine import TorchRolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.batches import PromptOrder
from longrl.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from longrl.train.experience import (
    build_experience,
    groups_with_signal,
    roll_out,
    rollout_metrics,
    score_groups,
)
from longrl.train.groups import Group
from longrl.train.metrics import MetricsLogger
from longrl.train.optim import build_optimizer, build_scheduler
from longrl.train.policy import Policy, load_policy, load_reference, vision_tower
from longrl.train.prompts import draw_decodable, encode_prompts
from longrl.train.timing import PhaseTimer, VisionCounter
from longrl.train.update import ppo_update

logger = logging.getLogger("longrl.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_train_samples(data: DataConfig):
    from longrl.data.dataset import load_dataset

    if not data.train_files:
        raise ValueError("data.train_files is not set: point it at a .jsonl/.json/.parquet file")
    samples, report = load_dataset(
        data.train_files,
        data.video_root,
        on_error=data.on_bad_sample,
        prompt_key=data.prompt_key,
        answer_key=data.answer_key,
        video_key=data.video_key,
    )
    logger.info(report.summary())
    return samples, report


def total_steps(config: RunConfig, num_samples: int) -> int:
    if config.trainer.max_steps is not None:
        return config.trainer.max_steps
    per_epoch = max(1, num_samples // config.data.rollout_batch_size)
    return per_epoch * config.trainer.total_epochs


def rollout_seed(config: RunConfig, step: int, attempt: int) -> int:
    """A fresh, reproducible seed per step and per DAPO round (no RNG state to save)."""
    base = (
        config.worker.rollout.seed
        if config.worker.rollout.seed is not None
        else config.trainer.seed
    )
    return (base * 1_000_003 + step * 1_009 + attempt) % (2**63 - 1)


def sampling_params(config: RunConfig, policy: Policy, seed: int) -> SamplingParams:
    rollout = config.worker.rollout
    return SamplingParams(
        n=rollout.n,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        max_new_tokens=config.data.max_response_length,
        stop_token_ids=policy.eos_token_ids,
        seed=seed,
    )


def reward_function(config: RunConfig):
    """Weighted built-ins + the user's function + DAPO's soft overlong penalty."""
    reward, algo = config.worker.reward, config.algorithm
    weights = dict(reward.functions)
    settings = {}
    if reward.reward_function:
        weights[reward.reward_function] = 1.0
    if algo.overlong_buffer_length > 0:
        weights["overlong"] = 1.0
        settings["overlong"] = {
            "max_len": config.data.max_response_length,
            "buffer": algo.overlong_buffer_length,
            "penalty_factor": algo.overlong_penalty_factor,
        }
    return combine(weights, settings=settings, on_error=reward.on_error)


def collect_groups(step, config, policy, engine, reward, order, skipped, timer):
    """Rollout rounds until the batch is full (one round unless DAPO filtering is on)."""
    batch_size = config.data.rollout_batch_size
    filtering = config.algorithm.online_filtering
    accumulator = GroupBatchAccumulator(batch_size, config.algorithm.max_filter_tries)
    rolled: list[Group] = []
    scores_all = []
    attempt = 0
    while True:
        with timer("data"):
            drawn = draw_decodable(order.next, batch_size, config.data, skipped)
            encoded = encode_prompts(policy, drawn, config.data, skipped)
        if encoded is None:
            continue
        with timer("rollout"):
            groups = roll_out(
                policy,
                engine,
                encoded,
                sampling_params(config, policy, rollout_seed(config, step, attempt)),
            )
        with timer("reward"):
            scores_all.append(score_groups(groups, policy, reward))
        rolled.extend(groups)
        attempt += 1
        if not filtering:
            return groups, rolled, scores_all
        if accumulator.add(groups_with_signal(groups)):
            return accumulator.take(), rolled, scores_all


def _merged_scores(scores_list):
    from longrl.rewards.combine import RewardScores

    total = [s for scores in scores_list for s in scores.total]
    names = scores_list[0].per_function.keys()
    per_function = {name: [v for s in scores_list for v in s.per_function[name]] for name in names}
    errors = {name: sum(s.errors[name] for s in scores_list) for name in names}
    return RewardScores(total, per_function, errors)


def check_supported(config: RunConfig) -> None:
    """Refuse settings whose feature is not built yet, instead of silently ignoring them."""
    pending = {
        "worker.rollout.name=vllm": config.worker.rollout.name != "builtin",
        "worker.actor.ulysses_sequence_parallel_size>1": (
            config.worker.actor.ulysses_sequence_parallel_size > 1
        ),
        "data.cache_dir (embedding cache)": config.data.cache_dir is not None,
        "trainer.nnodes>1 / n_gpus_per_node>1": (
            config.trainer.nnodes > 1 or config.trainer.n_gpus_per_node > 1
        ),
        "trainer.val_freq>0 / val_before_train": (
            config.trainer.val_freq > 0 or config.trainer.val_before_train
        ),
    }
    asked = [name for name, on in pending.items() if on]
    if asked:
        raise NotImplementedError(
            f"not available yet in this version of longrl: {asked}. Remove these settings "
            "(run `longrl eval` on checkpoints for validation)."
        )


def run_rl(config: RunConfig) -> Path:
    check_supported(config)
    run_dir = Path(config.trainer.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.trainer.seed)

    policy = load_policy(config.worker.actor.model, config.data)
    reference = load_reference(config.worker.actor.model) if config.uses_reference_model else None
    samples, report = load_train_samples(config.data)
    order = PromptOrder(samples, seed=config.data.seed, shuffle=config.data.shuffle)
    steps = total_steps(config, len(samples))
    actor = config.worker.actor
    mini_batches = config.data.rollout_batch_size // actor.global_batch_size
    optimizer = build_optimizer(policy.model, actor.optim)
    scheduler = build_scheduler(optimizer, actor.optim, steps * mini_batches * actor.ppo_epochs)
    reward = reward_function(config)
    engine = TorchRolloutEngine(
        policy.model,
        pad_token_id=policy.pad_token_id,
        eos_token_ids=policy.eos_token_ids,
        share_prefix=config.worker.rollout.share_prompt_prefix,
    )
    needs_old = actor.ppo_epochs > 1 or mini_batches > 1

    skipped: Counter = Counter()
    start_step = 0
    checkpoint = checkpoint_to_resume(config.trainer, run_dir)
    if checkpoint is not None:
        state = load_checkpoint(
            checkpoint, model=policy.model, optimizer=optimizer, scheduler=scheduler
        )
        order.load_state_dict(state.data["order"])
        skipped.update(state.data.get("skipped", {}))
        start_step = state.step
        logger.info("resumed from %s (step %d)", checkpoint, start_step)
    metrics_log = MetricsLogger(
        run_dir,
        config.trainer.logger,
        project=config.trainer.project_name,
        experiment=config.trainer.experiment_name,
        config=config.model_dump(mode="json"),
        total_steps=steps,
        resume_step=start_step if checkpoint is not None else None,
    )
    vision_counter = VisionCounter(vision_tower(policy.model))
    policy.model.eval()
    step = start_step
    try:
        for step in range(start_step + 1, steps + 1):
            timer = PhaseTimer()
            groups, rolled, scores = collect_groups(
                step, config, policy, engine, reward, order, skipped, timer
            )
            with timer("experience"):
                experience = build_experience(
                    groups, policy, reference, config, needs_old_log_probs=needs_old
                )
            with timer("update"):
                update_metrics = ppo_update(policy, optimizer, scheduler, experience, config)
            metrics = {
                **rollout_metrics(rolled, _merged_scores(scores)),
                **experience.metrics,
                **update_metrics,
                **timer.metrics(),
                **vision_counter.take(),
                "data/skipped_total": float(sum(skipped.values()) + report.total_skipped),
                "batch/groups": float(len(groups)),
                "batch/rollout_rounds": float(len(scores)),
            }
            tokens = float(sum(len(r) for g in rolled for r in g.responses))
            metrics["throughput/response_tokens_per_s"] = tokens / max(metrics["time/step_s"], 1e-9)
            metrics_log.log(step, metrics)
            if should_save(config.trainer, step, steps):
                save_checkpoint(
                    run_dir,
                    step=step,
                    model=policy.model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    data_state={"order": order.state_dict(), "skipped": dict(skipped)},
                    config_yaml=dump_config(config),
                    keep=config.trainer.save_limit,
                )
    finally:
        metrics_log.close()
    return run_dir


def should_save(trainer: TrainerConfig, step: int, steps: int) -> bool:
    freq = trainer.save_freq
    return step == steps or (freq > 0 and step % freq == 0)


def checkpoint_to_resume(trainer: TrainerConfig, run_dir: Path) -> Path | None:
    resume = trainer.resume
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"trainer.resume={resume}: no such checkpoint directory")
    return path
