"""Rollout, rewards, reference/old log-probs and advantages for one RL step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from longrl.algos import compute_advantages, keep_groups_with_variance, rewards_from_scores
from longrl.algos.kl import kl_divergence
from longrl.config.root import RunConfig
from longrl.rewards.combine import CombinedReward, RewardScores, score_metrics
from longrl.rollout.engine import RolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.groups import Group, GroupBatch, batch_groups, padded, split_groups
from longrl.train.logprobs import response_log_probs
from longrl.train.policy import Policy
from longrl.train.prompts import EncodedPrompts, prompt_batch


@dataclass
class Experience:
    groups: list[Group]
    response_mask: torch.Tensor  # [N, T] (N = G * n), rows grouped by prompt
    valid: torch.Tensor  # [N] bool: the sample has a reward
    advantages: torch.Tensor  # [N, T]
    old_log_probs: torch.Tensor | None  # [N, T]; None = on-policy (use the update's own)
    ref_log_probs: torch.Tensor | None  # [N, T]
    rollout_log_probs: torch.Tensor  # [N, T]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.groups[0].n


def roll_out(
    policy: Policy,
    engine: RolloutEngine,
    encoded: EncodedPrompts,
    params: SamplingParams,
) -> list[Group]:
    """Sample n responses per prompt; the prompt's video embeddings are reused, not recomputed."""
    with torch.no_grad():
        batch = prompt_batch(policy.model, encoded.model_input, encoded.video_embeds)
        out = engine.generate(batch, params)
    groups = split_groups(encoded.samples, encoded.model_input, encoded.video_embeds)
    lengths = out.lengths.tolist()
    for row, length in enumerate(lengths):
        group = groups[int(out.prompt_index[row])]
        group.responses.append(out.response_ids[row, :length].clone())
        group.rollout_log_probs.append(out.log_probs[row, :length].clone())
        group.finished.append(bool(out.finished[row]))
    return groups


def score_groups(groups: Sequence[Group], policy: Policy, reward: CombinedReward) -> RewardScores:
    """Decode responses and score them in one batched reward call."""
    texts, columns = [], _reward_columns(groups)
    for group in groups:
        group.texts = decode_responses(policy, group.responses)
        texts.extend(group.texts)
    scores = reward(texts, **columns)
    for i, group in enumerate(groups):
        group.scores = scores.total[i * group.n : (i + 1) * group.n]
    return scores


def decode_responses(policy: Policy, responses: Sequence[torch.Tensor]) -> list[str]:
    """Response texts as rewards and eval see them: the final stop token dropped, other
    special tokens kept (so <think>/<answer> survive even when they are added tokens)."""
    stop_ids = set(policy.eos_token_ids)
    texts = []
    for tokens in responses:
        ids = tokens.tolist()
        if ids and ids[-1] in stop_ids:
            ids = ids[:-1]
        texts.append(policy.tokenizer.decode(ids, skip_special_tokens=False))
    return texts


def _reward_columns(groups: Sequence[Group]) -> dict[str, list[Any]]:
    """Dataset columns repeated per response, plus `response_length` in tokens."""
    extra_keys = sorted({k for g in groups for k in g.sample.extra})
    columns: dict[str, list[Any]] = {
        key: []
        for key in (
            "answer",
            "problem_type",
            "data_type",
            "problem_id",
            "response_length",
            *extra_keys,
        )
    }
    for group in groups:
        sample = group.sample
        for response in group.responses:
            columns["answer"].append(sample.answer)
            columns["problem_type"].append(sample.problem_type)
            columns["data_type"].append(sample.data_type)
            columns["problem_id"].append(sample.problem_id)
            columns["response_length"].append(len(response))
            for key in extra_keys:
                columns[key].append(sample.extra.get(key))
    return columns


def groups_with_signal(groups: Sequence[Group]) -> list[Group]:
    """DAPO dynamic sampling: keep groups whose rewards are not all equal."""
    scores = [s for g in groups for s in g.scores]
    rewards, valid = rewards_from_scores(scores)
    ids = [i for i, g in enumerate(groups) for _ in range(g.n)]
    kept = set(keep_groups_with_variance(rewards, ids, valid=valid))
    return [g for i, g in enumerate(groups) if i in kept]


def log_probs_over_groups(
    model: torch.nn.Module,
    groups: Sequence[Group],
    policy: Policy,
    *,
    groups_per_micro_batch: int,
    temperature: float,
    share_prefix: bool,
    width: int,
    reuse_video_embeds: bool,
) -> torch.Tensor:
    """No-grad per-token log-probs of every response, [N, width], micro-batched by groups.

    `reuse_video_embeds`: the groups' embeddings came from this model's vision tower
    with its current weights; otherwise the tower runs again.
    """
    pieces = []
    with torch.no_grad():
        for start in range(0, len(groups), groups_per_micro_batch):
            chunk = batch_groups(
                groups[start : start + groups_per_micro_batch],
                policy.model.config,
                policy.pad_token_id,
            )
            embeds = chunk.video_embeds if reuse_video_embeds else None
            pieces.append(_chunk_log_probs(model, chunk, embeds, temperature, share_prefix))
    return torch.cat([_pad_to(p, width) for p in pieces])


def _chunk_log_probs(model, chunk: GroupBatch, video_embeds, temperature: float, share_prefix):
    batch = prompt_batch(model, chunk.prompt, video_embeds)
    return response_log_probs(
        model,
        batch,
        chunk.response_ids,
        chunk.response_mask,
        n=chunk.n,
        temperature=temperature,
        share_prefix=share_prefix,
    ).log_probs


def _pad_to(values: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


def build_experience(
    groups: list[Group],
    policy: Policy,
    reference: torch.nn.Module | None,
    config: RunConfig,
    *,
    needs_old_log_probs: bool,
) -> Experience:
    actor, algo = config.worker.actor, config.algorithm
    full = batch_groups(groups, policy.model.config, policy.pad_token_id)
    mask, width = full.response_mask, full.response_mask.shape[1]
    n = full.n
    groups_per_micro = max(1, actor.micro_batch_size_per_device_for_experience // n)
    common = dict(
        groups_per_micro_batch=groups_per_micro,
        temperature=config.worker.rollout.temperature,
        share_prefix=actor.share_prompt_prefix,
        width=width,
    )
    old = None
    if needs_old_log_probs:  # same weights as the rollout: its embeddings are valid
        old = log_probs_over_groups(policy.model, groups, policy, reuse_video_embeds=True, **common)
    ref = None
    if reference is not None:
        # A frozen policy tower still equals the reference's (both the initial weights).
        ref = log_probs_over_groups(
            reference, groups, policy, reuse_video_embeds=not policy.vision_trainable, **common
        )

    scores = [s for g in groups for s in g.scores]
    rewards, valid = rewards_from_scores(scores)
    options: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    if algo.adv_estimator == "reinforce_plus_plus":
        options["gamma"] = algo.gamma
        if ref is not None and not algo.use_kl_loss:
            current = old if old is not None else _rollout_log_probs(groups, width)
            options["token_kl"] = kl_divergence(algo.kl_penalty, current, ref) * mask
            options["kl_coef"] = algo.kl_coef
            metrics["kl"] = float(options["token_kl"].sum() / mask.sum().clamp(min=1))
    group_ids = [i for i, g in enumerate(groups) for _ in range(g.n)]
    advantages = compute_advantages(
        algo.adv_estimator, rewards, mask, group_ids, valid=valid, **options
    )
    return Experience(
        groups=groups,
        response_mask=mask,
        valid=valid,
        advantages=advantages,
        old_log_probs=old,
        ref_log_probs=ref,
        rollout_log_probs=_rollout_log_probs(groups, width),
        metrics=metrics,
    )


def _rollout_log_probs(groups: Sequence[Group], width: int) -> torch.Tensor:
    return padded([lp for g in groups for lp in g.rollout_log_probs], width)


def rollout_metrics(groups: Sequence[Group], scores: RewardScores | None) -> dict[str, float]:
    lengths = torch.tensor([len(r) for g in groups for r in g.responses], dtype=torch.float)
    finished = torch.tensor([f for g in groups for f in g.finished], dtype=torch.float)
    metrics = {
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response/clip_ratio": float(1.0 - finished.mean()),
    }
    if scores is not None:
        metrics.update(score_metrics(scores))
        if "reward/total/mean" in metrics:
            metrics["reward/mean"] = metrics["reward/total/mean"]
        if "reward/total/std" in metrics:
            metrics["reward/std"] = metrics["reward/total/std"]
        if "reward/accuracy/mean" in metrics:
            metrics["accuracy"] = metrics["reward/accuracy/mean"]
    return metrics
