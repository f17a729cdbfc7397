"""`longrl sft`: chain-of-thought SFT, the first stage before RL.

Per step: draw `sft.batch_size` samples -> decode their videos -> build the
prompts and encode each video once with the frozen ViT -> append each target
(`<think>..</think><answer>..</answer><|im_end|>`) with the same builder RL
uses -> micro-batches (length-bucketed, or packed) -> token-mean cross-entropy
on target tokens, accumulated over the step -> clip -> AdamW + schedule ->
metrics -> atomic checkpoint (the RL layout, so `trainer.resume` and export
work the same way).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from longrl.config import dump_config
from longrl.config.sft import SftConfig, SftSection
from longrl.devices import select_device
from longrl.train.batches import PromptOrder
from longrl.train.checkpoint import load_checkpoint, save_checkpoint
from longrl.train.groups import Group
from longrl.train.metrics import open_run_metrics
from longrl.train.optim import build_optimizer, build_scheduler
from longrl.train.policy import Policy, load_policy, vision_tower
from longrl.train.prompts import cache_metrics
from longrl.train.rl import (
    checkpoint_to_resume,
    load_train_samples,
    seed_everything,
    should_save,
)
from longrl.train.sft_data import draw_step_batch, select_trainable
from longrl.train.sft_forward import micro_batch_input, target_logits
from longrl.train.sft_loss import length_buckets, token_cross_entropy
from longrl.train.timing import PhaseTimer, VisionCounter
from longrl.train.unsupported import frozen_vision_for_cache, refuse_unbuilt

logger = logging.getLogger("longrl.train")


def sft_total_steps(config: SftConfig, num_samples: int) -> int:
    if config.trainer.max_steps is not None:
        return config.trainer.max_steps
    return max(1, num_samples // config.sft.batch_size) * config.trainer.total_epochs


def accumulate_gradients(
    policy: Policy, items: Sequence[Group], *, micro_batch_size: int, packing: bool
) -> dict[str, float]:
    """Forward/backward over the step's micro-batches; gradients add up in `.grad`.

    Each micro-batch's summed loss is divided by the step's target-token count,
    so the result is the gradient of the step's token-mean loss.
    """
    total = sum(len(item.responses[0]) for item in items)
    lengths = [len(item.prompt_ids) + len(item.responses[0]) for item in items]
    buckets = length_buckets(lengths, micro_batch_size)
    summed, correct, real, padding = 0.0, 0, 0, 0
    for bucket in buckets:
        model_input, embeds = micro_batch_input([items[i] for i in bucket], policy)
        out = target_logits(policy.model, model_input, embeds, packing=packing)
        loss = token_cross_entropy(out.logits, out.labels)
        (loss.summed / total).backward()
        summed += float(loss.summed.detach())
        correct += loss.correct
        real += out.real_tokens
        padding += out.padding_tokens
    return {
        "loss": summed / total,
        "token_accuracy": correct / total,
        "tokens/target": float(total),
        "tokens/real": float(real),
        "tokens/padding": float(padding),
        "batch/padding_fraction": padding / max(1, real + padding),
        "batch/samples": float(len(items)),
        "batch/micro_batches": float(len(buckets)),
    }


def sft_step(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    items: Sequence[Group],
    sft: SftSection,
    timer: PhaseTimer,
) -> dict[str, float]:
    """One optimizer step on `items`; returns its metrics."""
    optimizer.zero_grad(set_to_none=True)
    with timer("forward_backward"):
        stats = accumulate_gradients(
            policy, items, micro_batch_size=sft.micro_batch_size, packing=sft.packing
        )
    with timer("optimizer"):
        trainable = [p for p in policy.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, sft.max_grad_norm)
        stats["actor/grad_norm"] = float(grad_norm)
        stats["actor/lr"] = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return stats


def run_sft(config: SftConfig) -> Path:
    """Train as the config says; returns the run directory (metrics.jsonl, checkpoints/)."""
    check_sft_supported(config)
    _check_paths(config)
    run_dir = Path(config.trainer.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.trainer.seed)

    # trainer.device, before the optimizer is built over the parameters.
    policy = load_policy(config.model, config.data, device=select_device(config.trainer.device))
    logger.info("training on %s", policy.device)
    samples, report = load_train_samples(config.data)
    samples, left_out = select_trainable(samples, policy.tokenizer, config.data, config.sft)
    order = PromptOrder(samples, seed=config.data.seed, shuffle=config.data.shuffle)
    steps = sft_total_steps(config, len(samples))
    optimizer = build_optimizer(policy.model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, steps)

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
    resume_step = start_step if checkpoint is not None else None
    metrics_log = open_run_metrics(run_dir, config, steps, resume_step)
    visual = vision_tower(policy.model)
    vision_counter = VisionCounter(visual)
    policy.model.train()
    if visual is not None and not policy.vision_trainable:
        visual.eval()  # frozen: encoded under no_grad, as in inference
    left_out_total = report.total_skipped + sum(left_out.values())
    try:
        for step in range(start_step + 1, steps + 1):
            timer = PhaseTimer()
            items = draw_step_batch(
                policy,
                order,
                config.sft.batch_size,
                config.data,
                skipped,
                timer,
                empty_think=config.sft.missing_reasoning == "empty_think",
            )
            metrics = sft_step(policy, optimizer, scheduler, items, config.sft, timer)
            metrics.update(timer.metrics())
            metrics.update(vision_counter.take())
            metrics.update(cache_metrics(policy, config.data))
            seconds = max(metrics["time/step_s"], 1e-9)
            metrics["throughput/tokens_per_s"] = metrics["tokens/real"] / seconds
            metrics["throughput/target_tokens_per_s"] = metrics["tokens/target"] / seconds
            metrics["data/skipped_total"] = float(sum(skipped.values()) + left_out_total)
            for reason, count in (report.skipped + left_out + skipped).items():
                metrics[f"data/skipped/{reason}"] = float(count)
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
    policy.model.eval()
    return run_dir


def check_sft_supported(config: SftConfig) -> None:
    """Refuse settings whose feature SFT does not have yet, instead of ignoring them."""
    pending = {
        **frozen_vision_for_cache(config.data.cache_dir, config.model.freeze_vision_tower),
        "trainer.nnodes>1 / n_gpus_per_node>1": (
            config.trainer.nnodes > 1 or config.trainer.n_gpus_per_node > 1
        ),
        "trainer.val_freq>0 / val_before_train": (
            config.trainer.val_freq > 0 or config.trainer.val_before_train
        ),
    }
    refuse_unbuilt(pending, "longrl sft")


def _check_paths(config: SftConfig) -> None:
    """Fail on a missing model or data path before loading anything heavy."""
    if not config.model.model_path:
        raise ValueError(
            "model.model_path is not set: point it at a local checkpoint directory "
            "(e.g. one written by `longrl tiny-model DIR`)"
        )
    if not Path(config.model.model_path).is_dir():
        raise FileNotFoundError(f"model.model_path={config.model.model_path}: no such directory")
    if not config.data.train_files:
        raise ValueError("data.train_files is not set: point it at a .jsonl/.json/.parquet file")
    if not Path(config.data.train_files).is_file():
        raise FileNotFoundError(f"data.train_files={config.data.train_files}: no such file")
