"""The policy update: PPO-clip (+ KL in the loss) over mini-batches of groups.

Each mini-batch of `worker.actor.global_batch_size` prompts is one optimizer
step; it is split into micro-batches of whole groups (gradient accumulation),
each run with the prefix-shared forward. Losses are normalised by the
mini-batch's token (or sequence) count, so accumulation equals one big batch.

Data parallel: each replica holds global_batch_size / dp prompts of every
mini-batch; the normaliser is the count over all replicas and gradients are
summed over every rank (which also completes the sequence-parallel partial
gradients), so dp replicas step exactly like one process on the whole batch.
All ranks run the same number of optimizer steps: a mini-batch empty on every
replica is skipped everywhere, one empty on some replicas only contributes zeros.

Sharded weights (FSDP): every forward and backward is collective, so every rank also
runs the same number of passes (zero-weight passes on a replica with fewer groups),
always runs backward, and calls the vision tower once per pass when it runs in every
pass (trainable, or worker.actor.reuse_video_embeddings=false).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from longrl.algos import aggregate_loss, ppo_clip_loss
from longrl.algos.kl import kl_divergence
from longrl.config.root import RunConfig
from longrl.devices import module_device, to_device
from longrl.parallel.fsdp import clip_grad_norm, is_sharded
from longrl.train.experience import Experience, video_embeds_for
from longrl.train.groups import batch_groups
from longrl.train.logprobs import response_log_probs
from longrl.train.policy import Policy
from longrl.train.prompts import prompt_batch
from longrl.vision.placeholder import placeholder_embeddings

if TYPE_CHECKING:
    from longrl.train.distributed import TrainerParallel

# Micro-batch losses are already divided by the mini-batch count: they add up.
_SUMMED_OVER_MICRO_BATCHES = ("loss", "actor/pg_loss")
# Equal on every rank (computed after the gradient reduction): not reduced.
_REPLICATED = ("actor/grad_norm", "actor/lr")


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
    parallel: TrainerParallel | None = None,
) -> dict[str, float]:
    actor, algo = config.worker.actor, config.algorithm
    model, n = policy.model, experience.n
    dp = 1 if parallel is None else parallel.dp
    model.train()
    use_kl_loss = experience.ref_log_probs is not None and algo.use_kl_loss
    loss_mask = experience.response_mask * experience.valid[:, None].long()
    groups = experience.groups
    groups_per_micro = max(1, actor.micro_batch_size_per_device_for_update // n)
    part = actor.global_batch_size // dp  # this replica's groups per mini-batch
    mini_batches = config.data.rollout_batch_size // actor.global_batch_size
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)

    sharded = is_sharded(model)
    # Sharded, every rank must run as many forward/backward passes as the busiest replica.
    replica_groups = parallel.gather_json(len(groups), over="dp") if sharded else [len(groups)]

    for _epoch in range(actor.ppo_epochs):
        for mini in range(mini_batches):
            mini_start, mini_end = mini_batch_bounds(mini, part, len(groups))
            rows = slice(mini_start * n, mini_end * n)
            local = [loss_normalizer(loss_mask[rows], actor.loss_agg_mode), mini_end - mini_start]
            normalizer, global_groups = _summed(local, parallel)
            if global_groups == 0:
                continue  # past the end of a shrunk batch on every replica
            normalizer = max(1.0, normalizer)
            starts = list(range(mini_start, mini_end, groups_per_micro))
            most = max(
                len(range(*mini_batch_bounds(mini, part, count), groups_per_micro))
                for count in replica_groups
            )
            for _ in range(most - len(starts)):
                # A pass that changes nothing (loss x 0) on a stand-in group, so this
                # replica joins the FSDP all-gathers and reduce-scatters of the others.
                _micro_batch_backward(
                    policy, experience, 0, 1, loss_mask, 1.0, use_kl_loss, config, weight=0.0
                )
            for start in starts:
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
            if parallel is not None:
                parallel.sum_gradients(model)
            grad_norm = clip_grad_norm(
                [p for p in model.parameters() if p.requires_grad], actor.max_grad_norm
            )
            sums["actor/grad_norm"] += grad_norm
            weights["actor/grad_norm"] += 1
            sums["actor/lr"] += optimizer.param_groups[0]["lr"]
            weights["actor/lr"] += 1
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    if dp > 1:
        _reduce_over_replicas(sums, weights, parallel)
    return {key: sums[key] / weights[key] for key in sums if weights[key] > 0}


def mini_batch_bounds(mini: int, part: int, count: int) -> tuple[int, int]:
    """Groups [start, end) of mini-batch `mini` on a replica holding `count` groups."""
    start = min(mini * part, count)
    return start, min(start + part, count)


def _summed(values: list[float], parallel) -> list[float]:
    if parallel is None or parallel.dp == 1:
        return values
    return parallel.sum_over_dp(torch.tensor(values, dtype=torch.float64)).tolist()


def _reduce_over_replicas(sums: dict, weights: dict, parallel: TrainerParallel) -> None:
    """Global metrics: losses summed over replicas (each is its share of the mini-batch
    loss), token-weighted means pooled; grad norm and lr are already equal everywhere."""
    keys = sorted(sums)
    everyone = parallel.gather_json(keys, over="dp")
    if any(theirs != keys for theirs in everyone):
        raise RuntimeError(f"update metrics differ between replicas: {everyone}")
    reduced = parallel.sum_over_dp(
        torch.tensor([sums[k] for k in keys] + [weights[k] for k in keys], dtype=torch.float64)
    ).tolist()
    for i, key in enumerate(keys):
        if key in _REPLICATED:
            continue
        sums[key] = reduced[i]
        if key not in _SUMMED_OVER_MICRO_BATCHES:
            weights[key] = reduced[len(keys) + i]


def _micro_batch_backward(
    policy: Policy,
    experience: Experience,
    start: int,
    end: int,
    loss_mask: torch.Tensor,
    normalizer: float,
    use_kl_loss: bool,
    config: RunConfig,
    weight: float = 1.0,
) -> dict[str, tuple[float, float]]:
    """Forward and backward of groups [start, end); `weight` 0 makes a pass whose
    gradients are all zero (a sharded replica keeping step with the others)."""
    actor, algo = config.worker.actor, config.algorithm
    model, n = policy.model, experience.n
    chunk = batch_groups(experience.groups[start:end], model.config, policy.pad_token_id)
    width = chunk.response_ids.shape[1]
    rows = slice(start * n, end * n)
    mask = loss_mask[rows, :width]
    cached = None if policy.encodes_every_pass else chunk.video_embeds
    # A trainable tower encodes here, with gradients (frames split over the SP group);
    # so does a frozen one when reuse is off (worker.actor.reuse_video_embeddings=false).
    embeds = video_embeds_for(policy, model, chunk.prompt, cached)
    stand_in = None
    if embeds is None and policy.encodes_every_pass and is_sharded(model):
        # No video here: the sharded tower still runs, at the same point as on the others.
        stand_in = placeholder_embeddings(model.model)
    batch = prompt_batch(model, chunk.prompt, embeds)
    response_ids, response_mask = to_device(
        (chunk.response_ids, chunk.response_mask), module_device(model)
    )
    current = response_log_probs(
        policy.language_model(),
        batch,
        response_ids,
        response_mask,
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
    if stand_in is not None:
        loss = loss + 0.0 * stand_in.sum()
    if weight != 1.0:
        loss = loss * weight
    # Sharded, backward is collective (reduce-scatter): every rank runs it, even at zero.
    if tokens > 0 or is_sharded(model):
        loss.backward()
    return stats
