"""Rollout, rewards, reference/old log-probs and advantages for one RL step.

Under data parallelism each replica builds the experience of its own groups;
advantages are computed over the global batch (REINFORCE++ whitens over every
replica's tokens) and metrics are reduced over the replicas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from longrl.algos import compute_advantages, keep_groups_with_variance, rewards_from_scores
from longrl.algos.kl import kl_divergence
from longrl.config.root import RunConfig
from longrl.devices import module_device, to_device
from longrl.rewards.combine import CombinedReward, RewardScores, score_metrics
from longrl.rollout.engine import RolloutEngine
from longrl.rollout.sampling import SamplingParams
from longrl.train.groups import Group, GroupBatch, batch_groups, padded, split_groups
from longrl.train.logprobs import response_log_probs
from longrl.train.policy import Policy
from longrl.train.prompts import EncodedPrompts, prompt_batch

if TYPE_CHECKING:
    from longrl.train.distributed import TrainerParallel


@dataclass
class Experience:
    """One step's training data; the tensors are on the policy's device (the loss's)."""

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
    """Sample n responses per prompt; the prompt's video embeddings are reused, not recomputed.

    The groups keep their responses on the CPU (rewards read them there; each later pass
    moves its micro-batch to the model), the video embeddings where they were computed."""
    with torch.no_grad():
        batch = prompt_batch(policy.model, encoded.model_input, encoded.video_embeds)
        out = engine.generate(batch, params)
    groups = split_groups(encoded.samples, encoded.model_input, encoded.video_embeds)
    # One copy of each output to the CPU, not one per row.
    response_ids, log_probs = out.response_ids.cpu(), out.log_probs.cpu()
    prompt_index, finished = out.prompt_index.tolist(), out.finished.tolist()
    for row, length in enumerate(out.lengths.tolist()):
        group = groups[prompt_index[row]]
        group.responses.append(response_ids[row, :length].clone())
        group.rollout_log_probs.append(log_probs[row, :length].clone())
        group.finished.append(bool(finished[row]))
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
            cached = chunk.video_embeds if reuse_video_embeds else None
            embeds = video_embeds_for(policy, model, chunk.prompt, cached)
            pieces.append(_chunk_log_probs(policy, model, chunk, embeds, temperature, share_prefix))
    return torch.cat([_pad_to(p, width) for p in pieces])


def video_embeds_for(policy: Policy, model: torch.nn.Module, prompt, cached):
    """`cached` if given, else `model`'s vision tower on the prompt's videos (frames split
    over the policy's sequence-parallel group, in the caller's grad mode); None without video."""
    if prompt.video_grid_thw is None or cached is not None:
        return cached
    return policy.encode_videos(prompt, model=model)


def _chunk_log_probs(
    policy: Policy, model, chunk: GroupBatch, video_embeds, temperature: float, share_prefix
):
    batch = prompt_batch(model, chunk.prompt, video_embeds)
    response_ids, response_mask = to_device(
        (chunk.response_ids, chunk.response_mask), module_device(model)
    )
    return response_log_probs(
        policy.language_model(model),
        batch,
        response_ids,
        response_mask,
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
    parallel: TrainerParallel | None = None,
) -> Experience:
    """Log-probs, advantages and masks of `groups`, on the policy's device (where the loss
    is computed). Rewards and advantages are computed on the CPU (one value per response,
    from decoded text), then moved."""
    actor, algo = config.worker.actor, config.algorithm
    device = module_device(policy.model)
    full = batch_groups(groups, policy.model.config, policy.pad_token_id)
    mask, width = full.response_mask, full.response_mask.shape[1]
    rollout_log_probs = _rollout_log_probs(groups, width)
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
        with _gathered(parallel, policy.model):
            old = log_probs_over_groups(
                policy.model, groups, policy, reuse_video_embeds=policy.reuse_video_embeds, **common
            )
    ref = None
    if reference is not None:
        # A frozen policy tower still equals the reference's (both the initial weights).
        with _gathered(parallel, reference):
            ref = log_probs_over_groups(
                reference,
                groups,
                policy,
                reuse_video_embeds=not policy.encodes_every_pass,
                **common,
            )

    scores = [s for g in groups for s in g.scores]
    rewards, valid = rewards_from_scores(scores)
    options: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    if algo.adv_estimator == "reinforce_plus_plus":
        options["gamma"] = algo.gamma
        if ref is not None and not algo.use_kl_loss:
            current = old if old is not None else to_device(rollout_log_probs, device)
            # Computed where the log-probs are, then to the CPU with the rewards it shapes.
            options["token_kl"] = kl_divergence(algo.kl_penalty, current, ref).cpu() * mask
            options["kl_coef"] = algo.kl_coef
            metrics["kl"] = _mean_over_replicas(options["token_kl"].sum(), mask.sum(), parallel)
    group_ids = [i for i, g in enumerate(groups) for _ in range(g.n)]
    if parallel is None or parallel.dp == 1:
        advantages = compute_advantages(
            algo.adv_estimator, rewards, mask, group_ids, valid=valid, **options
        )
    else:
        advantages = global_advantages(
            algo.adv_estimator, rewards, valid, mask, n, options, parallel
        )
    return Experience(
        groups=groups,
        response_mask=to_device(mask, device),
        valid=to_device(valid, device),
        advantages=to_device(advantages, device),
        old_log_probs=old,
        ref_log_probs=ref,
        rollout_log_probs=to_device(rollout_log_probs, device),
        metrics=metrics,
    )


def _gathered(parallel: TrainerParallel | None, model: torch.nn.Module):
    """A sharded model whole for a pass whose forward count differs between replicas."""
    return contextlib.nullcontext() if parallel is None else parallel.gathered(model)


def _mean_over_replicas(total: torch.Tensor, count: torch.Tensor, parallel) -> float:
    if parallel is None or parallel.dp == 1:
        return float(total / count.clamp(min=1))
    summed = parallel.sum_over_dp(torch.stack([total.double(), count.double()]))
    return float(summed[0] / summed[1].clamp(min=1))


def global_advantages(
    estimator: str,
    rewards: torch.Tensor,
    valid: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    options: dict[str, Any],
    parallel: TrainerParallel,
) -> torch.Tensor:
    """Advantages of this replica's rows, computed over every replica's rows.

    Group estimators give the same numbers locally (a group lives on one replica);
    batch estimators (REINFORCE++ whitening) need every token of the global batch.
    The rows are small (rewards, masks, per-token KL), so they are all gathered and
    every rank runs the estimator on the whole batch, then keeps its own rows.
    """
    widths = parallel.gather_json([int(mask.shape[0]), int(mask.shape[1])], over="dp")
    width = max(w for _, w in widths)
    start = sum(rows for rows, _ in widths[: parallel.dp_rank])

    def gathered(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 2:
            tensor = _pad_to(tensor, width)
        return parallel.gather_rows(tensor.contiguous())

    options = dict(options)
    if "token_kl" in options:
        options["token_kl"] = gathered(options["token_kl"].float())
    offsets = [sum(rows for rows, _ in widths[:r]) // n for r in range(len(widths))]
    group_ids = [offsets[r] + i // n for r, (rows, _) in enumerate(widths) for i in range(rows)]
    everything = compute_advantages(
        estimator,
        gathered(rewards.float()),
        gathered(mask.long()),
        group_ids,
        valid=gathered(valid),
        **options,
    )
    return everything[start : start + mask.shape[0], : mask.shape[1]]


def _rollout_log_probs(groups: Sequence[Group], width: int) -> torch.Tensor:
    """[N, width] on the CPU, where the groups keep them."""
    return padded([lp for g in groups for lp in g.rollout_log_probs], width)


def rollout_stats(groups: Sequence[Group], scores: RewardScores | None) -> dict[str, Any]:
    """What the rollout metrics are computed from, as plain JSON-able lists."""
    stats: dict[str, Any] = {
        "lengths": [len(r) for g in groups for r in g.responses],
        "finished": [bool(f) for g in groups for f in g.finished],
    }
    if scores is not None:
        stats["scores"] = {
            "total": list(scores.total),
            "per_function": {k: list(v) for k, v in scores.per_function.items()},
            "errors": dict(scores.errors),
        }
    return stats


def rollout_metrics(groups: Sequence[Group], scores: RewardScores | None) -> dict[str, float]:
    return metrics_from_stats([rollout_stats(groups, scores)])


def rollout_metrics_over(
    groups: Sequence[Group], scores: RewardScores | None, parallel: TrainerParallel
) -> dict[str, float]:
    """Rollout metrics over every data-parallel replica's responses."""
    return metrics_from_stats(parallel.gather_json(rollout_stats(groups, scores), over="dp"))


def metrics_from_stats(parts: Sequence[dict[str, Any]]) -> dict[str, float]:
    lengths = torch.tensor([v for p in parts for v in p["lengths"]], dtype=torch.float)
    finished = torch.tensor([f for p in parts for f in p["finished"]], dtype=torch.float)
    metrics = {
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response/clip_ratio": float(1.0 - finished.mean()),
    }
    if all("scores" in p for p in parts):
        metrics.update(score_metrics(_joined_scores([p["scores"] for p in parts])))
        if "reward/total/mean" in metrics:
            metrics["reward/mean"] = metrics["reward/total/mean"]
        if "reward/total/std" in metrics:
            metrics["reward/std"] = metrics["reward/total/std"]
        if "reward/accuracy/mean" in metrics:
            metrics["accuracy"] = metrics["reward/accuracy/mean"]
    return metrics


def _joined_scores(parts: Sequence[dict[str, Any]]) -> RewardScores:
    names = list(parts[0]["per_function"])
    return RewardScores(
        total=[v for p in parts for v in p["total"]],
        per_function={name: [v for p in parts for v in p["per_function"][name]] for name in names},
        errors={name: sum(p["errors"][name] for p in parts) for name in names},
    )
