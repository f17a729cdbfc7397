"""The policy update: PPO-clip (+ KL in the loss) over mini-batches of groups.

Each mini-batch of `worker.actor.global_batch_size` prompts is one optimizer
step; it is split into micro-batches of whole groups (gradient accumulation),
each run with the prefix-shared forward. Losses are normalised by the
mini-batch's token (or sequence) count, so accumulation equals one big batch.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from longrl.algos import aggregate_loss, ppo_clip_loss
from longrl.algos.kl import kl_divergence
from longrl.config.root import RunConfig
from longrl.train.experience import Experience
from longrl.train.groups import batch_groups
from longrl.train.logprobs import response_log_probs
from longrl.train.policy import Policy
from longrl.train.prompts import prompt_batch

# Micro-batch losses are already divided by the mini-batch count: they add up.
_SUMMED_OVER_MICRO_BATCHES = ("loss", "actor/pg_loss")


def loss_normalizer(mask: torch.Tensor, mode: str) -> float:
    """The count `aggregate_loss` divides by over a whole mini-batch."""
    if mode == "token-mean":
        return float(mask.sum())
    return float((mask.sum(-1) > 0).sum())


def ppo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    experience: Experience,
    config: RunConfig,
) -> dict[str, float]:
    actor, algo = config.worker.actor, config.algorithm
    model, n = policy.model, experience.n
    model.train()
    use_kl_loss = experience.ref_log_probs is not None and algo.use_kl_loss
    loss_mask = experience.response_mask * experience.valid[:, None].long()
    groups = experience.groups
    groups_per_micro = max(1, actor.micro_batch_size_per_device_for_update // n)
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)

    for _epoch in range(actor.ppo_epochs):
        for mini_start in range(0, len(groups), actor.global_batch_size):
            mini_end = min(mini_start + actor.global_batch_size, len(groups))
            rows = slice(mini_start * n, mini_end * n)
            normalizer = max(1.0, loss_normalizer(loss_mask[rows], actor.loss_agg_mode))
            for start in range(mini_start, mini_end, groups_per_micro):
                end = min(start + groups_per_micro, mini_end)
                stats = _micro_batch_backward(
                    policy, experience, start, end, loss_mask, normalizer, use_kl_loss, config
                )
                for key, (value, weight) in stats.items():
                    if key in _SUMMED_OVER_MICRO_BATCHES:
                        sums[key] += value
                    else:
                        sums[key] += value * weight
                        weights[key] += weight
            for key in _SUMMED_OVER_MICRO_BATCHES:
                weights[key] += 1  # mean over mini-batches of the mini-batch loss
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], actor.max_grad_norm
            )
            sums["actor/grad_norm"] += float(grad_norm)
            weights["actor/grad_norm"] += 1
            sums["actor/lr"] += optimizer.param_groups[0]["lr"]
            weights["actor/lr"] += 1
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return {key: sums[key] / weights[key] for key in sums if weights[key] > 0}


def _micro_batch_backward(
    policy: Policy,
    experience: Experience,
    start: int,
    end: int,
    loss_mask: torch.Tensor,
    normalizer: float,
    use_kl_loss: bool,
    config: RunConfig,
) -> dict[str, tuple[float, float]]:
    actor, algo = config.worker.actor, config.algorithm
    model, n = policy.model, experience.n
    chunk = batch_groups(experience.groups[start:end], model.config, policy.pad_token_id)
    width = chunk.response_ids.shape[1]
    rows = slice(start * n, end * n)
    mask = loss_mask[rows, :width]
    reuse_embeds = None if policy.vision_trainable else chunk.video_embeds
    batch = prompt_batch(model, chunk.prompt, reuse_embeds)
    current = response_log_probs(
        model,
        batch,
        chunk.response_ids,
        chunk.response_mask,
        n=n,
        temperature=config.worker.rollout.temperature,
        share_prefix=actor.share_prompt_prefix,
        with_entropy=True,
    )
    old = experience.old_log_probs
    old = current.log_probs.detach() if old is None else old[rows, :width]
    policy_loss = ppo_clip_loss(
        current.log_probs,
        old,
        experience.advantages[rows, :width],
        mask,
        clip_ratio_low=actor.clip_ratio_low,
        clip_ratio_high=actor.clip_ratio_high,
        clip_ratio_c=actor.clip_ratio_dual,
    )
    loss = aggregate_loss(
        policy_loss.per_token_loss,
        mask,
        actor.loss_agg_mode,
        max_len=config.data.max_response_length,
        normalizer=normalizer,
    )
    tokens = float(mask.sum())
    stats = {key: (value, tokens) for key, value in policy_loss.metrics().items()}
    stats["actor/pg_loss"] = (float(loss.detach()), 1.0)
    if use_kl_loss:
        kl = kl_divergence(
            algo.kl_penalty, current.log_probs, experience.ref_log_probs[rows, :width]
        )
        kl_loss = aggregate_loss(
            kl,
            mask,
            actor.loss_agg_mode,
            max_len=config.data.max_response_length,
            normalizer=normalizer,
        )
        loss = loss + algo.kl_coef * kl_loss
        stats["kl"] = (float((kl.detach() * mask).sum()) / max(tokens, 1.0), tokens)
    stats["entropy"] = (float((current.entropy.detach() * mask).sum()) / max(tokens, 1.0), tokens)
    stats["loss"] = (float(loss.detach()), 1.0)
    if tokens > 0:
        loss.backward()
    return stats
