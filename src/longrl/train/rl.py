"""`longrl rl`: the GRPO-family training loop, top to bottom.

Per step: draw prompts -> decode their videos -> encode each video once ->
roll out n responses per prompt (prompt prefilled once per group) -> rewards ->
(DAPO: keep groups with signal, top up) -> reference/old log-probs
(prefix-shared) -> advantages -> PPO update -> metrics -> checkpoint.

Under torchrun the same loop runs on every rank (see `distributed`): each
data-parallel replica takes its share of every step's prompts, each
sequence-parallel group splits frames and sequences; rank 0 writes metrics and
checkpoints, every rank loads them. With worker.actor.fsdp.enable the policy and
reference weights are sharded over every rank (FSDP2, docs/distributed.md).
"""

from __future__ import annotations

import functools
import logging
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from longrl.algos import GroupBatchAccumulator
from longrl.algos.filters import DynamicSamplingExhausted
from longrl.config import RunConfig, dump_config
from longrl.config.data import DataConfig
from longrl.config.trainer import TrainerConfig
from longrl.rewards.combine import combine
from longrl.rollout.factory import build_rollout_engine
from longrl.rollout.sampling import SamplingParams
from longrl.train.batches import PromptOrder
from longrl.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from longrl.train.distributed import TrainerParallel, start_parallel
from longrl.train.distributed_data import draw_share
from longrl.train.experience import (
    build_experience,
    groups_with_signal,
    roll_out,
    rollout_metrics_over,
    score_groups,
)
from longrl.train.groups import Group
from longrl.train.metrics import open_run_metrics
from longrl.train.optim import build_optimizer, build_scheduler
from longrl.train.policy import Policy, load_policy, load_reference, vision_tower
from longrl.train.prompts import cache_metrics, draw_decodable, encode_prompts
from longrl.train.timing import PhaseTimer, VisionCounter
from longrl.train.unsupported import frozen_vision_for_cache, refuse_unbuilt
from longrl.train.update import ppo_update
from longrl.vision.encode import FrameCounter

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


def rollout_seed(config: RunConfig, step: int, attempt: int, replica: int = 0) -> int:
    """A fresh, reproducible seed per step, per DAPO round and per data-parallel replica
    (no RNG state to save). The ranks of one sequence-parallel group share it, so they
    sample the same tokens."""
    base = (
        config.worker.rollout.seed
        if config.worker.rollout.seed is not None
        else config.trainer.seed
    )
    return (base * 1_000_003 + step * 1_009 + attempt + replica * 7_919_003) % (2**63 - 1)


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


def draw_prompts(order, config: RunConfig, skipped: Counter, parallel: TrainerParallel):
    """This replica's share of the next batch of decodable prompts."""
    batch_size = config.data.rollout_batch_size
    if parallel.dp == 1:
        return draw_decodable(order.next, batch_size, config.data, skipped)
    mini_batch = config.worker.actor.global_batch_size
    return draw_share(order.next, batch_size, mini_batch, config.data, skipped, parallel)


def collect_groups(step, config, policy, engine, reward, order, skipped, timer, parallel):
    """Rollout rounds until every replica's share of the batch is full (one round unless
    DAPO filtering is on, or a share lost all its prompts to the length limit).

    Every rank draws in every round (the prompt order stays the same everywhere); a
    replica whose share is full skips the rollout. Whether to go on is decided from
    every rank's state, so all ranks leave the loop in the same round.
    """
    share = config.data.rollout_batch_size // parallel.dp
    filtering = config.algorithm.online_filtering
    max_tries = config.algorithm.max_filter_tries
    accumulator = GroupBatchAccumulator(share, max_tries, on_exhausted="partial")
    batch: list[Group] | None = None
    rolled: list[Group] = []
    scores_all = []
    attempt = 0
    while True:
        with timer("data"):
            drawn = draw_prompts(order, config, skipped, parallel)
            encoded = (
                None if batch is not None else encode_prompts(policy, drawn, config.data, skipped)
            )
        if encoded is not None:
            seed = rollout_seed(config, step, attempt, parallel.dp_rank)
            with timer("rollout"):
                groups = roll_out(policy, engine, encoded, sampling_params(config, policy, seed))
            with timer("reward"):
                scores_all.append(score_groups(groups, policy, reward))
            rolled.extend(groups)
            attempt += 1
            if not filtering:
                batch = groups
            elif accumulator.add(groups_with_signal(groups)) and accumulator.full:
                batch = accumulator.take()
        exhausted = batch is None and accumulator.exhausted
        if parallel.everyone(not exhausted):
            if parallel.everyone(batch is not None):
                return batch, rolled, scores_all
            continue
        raise DynamicSamplingExhausted(
            f"dynamic sampling: a replica kept {len(accumulator.groups)} of {share} groups "
            f"after {accumulator.tries} rounds (max_tries); most groups have equal rewards. "
            "Raise algorithm.max_filter_tries or use easier/harder-balanced data"
            if exhausted
            else "dynamic sampling ran out of tries on another data-parallel replica"
        )


def _merged_scores(scores_list):
    from longrl.rewards.combine import RewardScores

    total = [s for scores in scores_list for s in scores.total]
    names = scores_list[0].per_function.keys()
    per_function = {name: [v for s in scores_list for v in s.per_function[name]] for name in names}
    errors = {name: sum(s.errors[name] for s in scores_list) for name in names}
    return RewardScores(total, per_function, errors)


def check_supported(config: RunConfig) -> None:
    """Refuse settings whose feature is not built yet, instead of silently ignoring them."""
    actor_model = config.worker.actor.model
    pending = {
        **frozen_vision_for_cache(config.data.cache_dir, actor_model.freeze_vision_tower),
        "trainer.val_freq>0 / val_before_train": (
            config.trainer.val_freq > 0 or config.trainer.val_before_train
        ),
    }
    refuse_unbuilt(pending, "longrl rl")


def run_rl(config: RunConfig) -> Path:
    """Train; under torchrun every rank calls this with the same config."""
    check_supported(config)
    parallel = start_parallel(config)
    try:
        return _train(config, parallel)
    except Exception as err:
        explained = parallel.explain(err)
        if explained is err:
            raise
        raise explained from err
    finally:
        parallel.close()


def _train(config: RunConfig, parallel: TrainerParallel) -> Path:
    run_dir = Path(config.trainer.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.trainer.seed)

    # On this rank's device (trainer.device) before sharding and before the optimizer.
    policy = load_policy(config.worker.actor.model, config.data, device=parallel.device)
    policy.sp_group = parallel.sp_group
    policy.gather_chunks = config.worker.rollout.num_chunk_seq
    policy.reuse_video_embeds = config.worker.actor.reuse_video_embeddings
    parallel.shard(policy.model)  # worker.actor.fsdp.enable: before the reference loads
    reference = None
    if config.uses_reference_model:
        reference = load_reference(config.worker.actor.model, device=parallel.device)
    parallel.shard(reference)
    samples, report = load_train_samples(config.data)
    order = PromptOrder(samples, seed=config.data.seed, shuffle=config.data.shuffle)
    steps = total_steps(config, len(samples))
    actor = config.worker.actor
    mini_batches = config.data.rollout_batch_size // actor.global_batch_size
    optimizer = build_optimizer(policy.model, actor.optim)
    scheduler = build_scheduler(optimizer, actor.optim, steps * mini_batches * actor.ppo_epochs)
    reward = reward_function(config)
    engine = build_rollout_engine(  # worker.rollout.name: builtin or vllm
        config,
        policy.language_model(),
        pad_token_id=policy.pad_token_id,
        eos_token_ids=policy.eos_token_ids,
    )
    needs_old = actor.ppo_epochs > 1 or mini_batches > 1

    skipped: Counter = Counter()
    start_step = 0
    checkpoint = agreed_checkpoint(config.trainer, run_dir, parallel)
    if checkpoint is not None:
        state = load_checkpoint(
            checkpoint, model=policy.model, optimizer=optimizer, scheduler=scheduler
        )
        order.load_state_dict(state.data["order"])
        if parallel.dp_rank == 0:  # saved counts are global; replicas add their own to them
            skipped.update(state.data.get("skipped", {}))
        start_step = state.step
        logger.info("resumed from %s (step %d)", checkpoint, start_step)
    parallel.check_in_sync(policy.model)
    metrics_log = None
    if parallel.is_main:
        resume_step = start_step if checkpoint is not None else None
        metrics_log = open_run_metrics(run_dir, config, steps, resume_step)
    vision_counter = VisionCounter(vision_tower(policy.model))
    # The reference's own tower runs only when the policy's embeddings cannot stand in.
    reference_counter = VisionCounter(
        vision_tower(reference) if reference is not None else None, prefix="vision/reference_"
    )
    frame_counter = FrameCounter(vision_tower(policy.model))
    policy.model.eval()
    step = start_step
    try:
        for step in range(start_step + 1, steps + 1):
            timer = PhaseTimer()
            # Weights to the engine (in place): the initial or resumed ones, then each update's.
            engine.sync_weights(policy.language_model())
            # Sharded: the policy whole for all of rollout (replicas decode different lengths).
            with parallel.gathered(policy.model):
                groups, rolled, scores = collect_groups(
                    step, config, policy, engine, reward, order, skipped, timer, parallel
                )
            with timer("experience"):
                experience = build_experience(
                    groups,
                    policy,
                    reference,
                    config,
                    needs_old_log_probs=needs_old,
                    parallel=parallel,
                )
            with timer("update"):
                update_metrics = ppo_update(
                    policy, optimizer, scheduler, experience, config, parallel=parallel
                )
            tokens = sum(len(r) for g in rolled for r in g.responses)
            book = parallel.gather_json(
                [len(groups), len(scores), tokens, dict(skipped)], over="dp"
            )
            frames = parallel.gather_json(frame_counter.take(), over="world")
            skipped_total = Counter()
            for _, _, _, counts in book:
                skipped_total.update(counts)
            metrics = {
                **rollout_metrics_over(rolled, _merged_scores(scores), parallel),
                **experience.metrics,
                **update_metrics,
                **timer.metrics(),
                **vision_counter.take(),
                **(reference_counter.take() if reference is not None else {}),
                **cache_metrics(policy, config.data),
                "vision/frames_encoded": float(sum(frames)),
                "vision/frames_per_rank_max": float(max(frames)),
                "data/skipped_total": float(sum(skipped_total.values()) + report.total_skipped),
                "batch/groups": float(sum(b[0] for b in book)),
                "batch/rollout_rounds": float(max(b[1] for b in book)),
            }
            metrics["throughput/response_tokens_per_s"] = sum(b[2] for b in book) / max(
                metrics["time/step_s"], 1e-9
            )
            if metrics_log is not None:
                metrics_log.log(step, metrics)
            if should_save(config.trainer, step, steps):
                data_state = {"order": order.state_dict(), "skipped": dict(skipped_total)}
                save_step(run_dir, step, policy, optimizer, scheduler, data_state, config, parallel)
    finally:
        if metrics_log is not None:
            metrics_log.close()
    return run_dir


def save_step(run_dir, step, policy, optimizer, scheduler, data_state, config, parallel):
    """Rank 0 writes the checkpoint; every rank calls this. Sharded, the full weights and
    then the full AdamW state are gathered from every rank as rank 0 writes each, so it
    never holds both at once; the other ranks join the same gathers in the same order."""
    parallel.check_in_sync(policy.model)
    weights = functools.partial(parallel.full_weights, policy.model)
    optimizer_state = functools.partial(parallel.full_optimizer_state, optimizer)
    if not parallel.is_main:
        weights()
        optimizer_state()
        return
    save_checkpoint(
        run_dir,
        step=step,
        model=weights,
        optimizer=optimizer_state,
        scheduler=scheduler,
        data_state=data_state,
        config_yaml=dump_config(config),
        keep=config.trainer.save_limit,
    )


def agreed_checkpoint(trainer: TrainerConfig, run_dir: Path, parallel: TrainerParallel):
    """The checkpoint to resume from, the same on every rank (or an error on every rank)."""
    checkpoint = checkpoint_to_resume(trainer, run_dir)
    found = parallel.gather_json(None if checkpoint is None else str(checkpoint), over="world")
    if any(path != found[0] for path in found):
        raise RuntimeError(
            f"ranks found different checkpoints to resume from (by rank: {found}); "
            "trainer.output_dir must be one directory every node sees (a shared filesystem)"
        )
    return checkpoint


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
