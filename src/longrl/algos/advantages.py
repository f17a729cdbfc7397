"""Advantage estimators: rewards per response -> token-level advantages [N, T].

Conventions (shared by every estimator here):

- Inputs: `rewards` [N] with `group_ids` (one hashable per sample), or [G, n]
  with `group_ids=None` (row g = group g, flattened row-major); `response_mask`
  [N, T] (1/True on response tokens). Output: float [N, T], exactly 0 on masked
  tokens.
- `valid` [N] bool (optional) marks samples that have a reward. A reward
  function may answer None ("no score"); `rewards_from_scores` turns such a
  list into (rewards, valid). Invalid samples are left out of every statistic
  (group mean/std, batch whitening) and get advantage 0. The caller should
  also drop them from the loss denominators (multiply `response_mask` by
  `valid[:, None]` before aggregating), otherwise they dilute token means.
- A group with fewer than 2 valid samples has no baseline: advantage 0 (verl
  instead uses mean 0 / std 1 for a lone sample, i.e. advantage = raw reward;
  that trains on an unbaselined reward, which we do not want).
- A group whose rewards are all equal gets advantage 0 (no NaN): the deviation
  is 0 and the std is guarded by `eps`.
- Statistics are computed in float64 and returned in float32 (float64 if the
  rewards were float64). Advantages never carry gradient.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from longrl.algos.groups import flatten_rewards, group_count_sum


def rewards_from_scores(scores: Sequence[float | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward-function output -> (rewards [N] float32, valid [N] bool); None -> 0.0, invalid."""
    valid = torch.tensor([s is not None for s in scores], dtype=torch.bool)
    values = torch.tensor([0.0 if s is None else float(s) for s in scores], dtype=torch.float32)
    return values, valid


def _check_mask(response_mask: torch.Tensor, num_samples: int) -> torch.Tensor:
    if response_mask.dim() != 2 or response_mask.shape[0] != num_samples:
        raise ValueError(
            f"response_mask must be [N, T] with N={num_samples} (one row per reward), "
            f"got shape {tuple(response_mask.shape)}"
        )
    return response_mask.bool()


def _check_valid(valid: torch.Tensor | None, values: torch.Tensor) -> torch.Tensor:
    if valid is None:
        ok = torch.ones(values.numel(), dtype=torch.bool)
    else:
        ok = torch.as_tensor(valid, dtype=torch.bool).reshape(-1)
        if ok.numel() != values.numel():
            raise ValueError(f"valid has {ok.numel()} entries but rewards has {values.numel()}")
    bad = (~torch.isfinite(values)) & ok
    if bad.any():
        positions = bad.nonzero().flatten().tolist()[:10]
        raise ValueError(
            f"rewards are NaN/inf at samples {positions}; mark unscored samples with "
            "valid=False (see rewards_from_scores) instead"
        )
    return ok


def _out_dtype(values: torch.Tensor) -> torch.dtype:
    return torch.float64 if values.dtype == torch.float64 else torch.float32


def _prepare(rewards, response_mask, group_ids, valid):
    values, index, unique = flatten_rewards(rewards, group_ids)
    mask = _check_mask(response_mask, values.numel())
    ok = _check_valid(valid, values)
    return values.detach().double(), index, len(unique), mask, ok, _out_dtype(values)


def _group_deviation(values, index, num_groups, ok):
    """Per sample: (r_i - mean of its group's valid rewards, valid-sample count of its group)."""
    counts, sums = group_count_sum(torch.where(ok, values, 0.0), index, num_groups, ok)
    mean = sums / counts.clamp(min=1)
    deviation = torch.where(ok, values - mean[index], 0.0)
    return deviation, counts[index]


def _broadcast(per_sample: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (per_sample[:, None] * mask).to(dtype)


@torch.no_grad()
def grpo_advantages(
    rewards: torch.Tensor | Sequence[float],
    response_mask: torch.Tensor,
    group_ids: Any | None = None,
    *,
    eps: float = 1e-6,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """GRPO: A_i = (r_i - mean_g) / (std_g + eps), broadcast to the response tokens.

    std_g is the UNBIASED sample std, sqrt(sum_j (r_j - mean_g)^2 / (n_g - 1)), as
    `torch.std` gives and as verl/EasyR1 use; eps = 1e-6 as there. Example: one
    group [1, 0, 0, 1]: mean 0.5, std sqrt(4 * 0.25 / 3) = 0.57735, A = ±0.86603.
    """
    values, index, num_groups, mask, ok, dtype = _prepare(rewards, response_mask, group_ids, valid)
    deviation, counts = _group_deviation(values, index, num_groups, ok)
    squares = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, index, deviation**2)
    std = torch.sqrt(squares[index] / (counts - 1).clamp(min=1))
    advantage = deviation / (std + eps)
    advantage = torch.where(ok & (counts >= 2), advantage, 0.0)
    return _broadcast(advantage, mask, dtype)


@torch.no_grad()
def drgrpo_advantages(
    rewards: torch.Tensor | Sequence[float],
    response_mask: torch.Tensor,
    group_ids: Any | None = None,
    *,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dr.GRPO: A_i = r_i - mean_g (no std division, which biases towards easy/hard groups).

    Pair it with loss_agg_mode "seq-mean-token-sum-norm" to also drop the 1/|o_i|
    length normalisation, as the Dr.GRPO paper does.
    """
    values, index, num_groups, mask, ok, dtype = _prepare(rewards, response_mask, group_ids, valid)
    deviation, counts = _group_deviation(values, index, num_groups, ok)
    advantage = torch.where(ok & (counts >= 2), deviation, 0.0)
    return _broadcast(advantage, mask, dtype)


@torch.no_grad()
def rloo_advantages(
    rewards: torch.Tensor | Sequence[float],
    response_mask: torch.Tensor,
    group_ids: Any | None = None,
    *,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """RLOO: A_i = r_i - (sum_{j != i} r_j) / (n_g - 1)  ==  n_g / (n_g - 1) * (r_i - mean_g)."""
    values, index, num_groups, mask, ok, dtype = _prepare(rewards, response_mask, group_ids, valid)
    deviation, counts = _group_deviation(values, index, num_groups, ok)
    advantage = deviation * counts / (counts - 1).clamp(min=1)
    advantage = torch.where(ok & (counts >= 2), advantage, 0.0)
    return _broadcast(advantage, mask, dtype)


def outcome_token_rewards(rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Place each sequence's scalar reward on its LAST response token; 0 elsewhere. [N, T]."""
    mask = response_mask.bool()
    num_tokens = mask.shape[1]
    positions = torch.arange(num_tokens).expand_as(mask)
    last = torch.where(mask, positions, -1).max(dim=1).values  # -1: no response token
    out = torch.zeros(mask.shape, dtype=rewards.dtype)
    rows = (last >= 0).nonzero().flatten()
    out[rows, last[rows]] = rewards[rows]
    return out


def discounted_returns(
    token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1} over response tokens; 0 on masked tokens, which also
    reset the running return (so padding and non-response spans never leak reward)."""
    mask = response_mask.to(token_rewards.dtype)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[0], dtype=token_rewards.dtype)
    for t in range(token_rewards.shape[1] - 1, -1, -1):
        running = (token_rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked-in entries; 0 elsewhere.

    mean and the UNBIASED variance (divide by count - 1, as verl's masked_whiten)
    are taken over entries where mask is true. Fewer than 2 entries -> all 0.
    """
    mask = mask.bool()
    count = int(mask.sum())
    if count < 2:
        return torch.zeros_like(values)
    picked = values[mask]
    mean = picked.mean()
    var = ((picked - mean) ** 2).sum() / (count - 1)
    return torch.where(mask, (values - mean) / torch.sqrt(var + eps), 0.0)


def _token_kl_penalty(token_kl, kl_coef, mask, dtype):
    if token_kl is None or kl_coef == 0.0:
        return torch.zeros(mask.shape, dtype=dtype)
    if token_kl.shape != mask.shape:
        raise ValueError(
            f"token_kl must match response_mask {tuple(mask.shape)}, got {tuple(token_kl.shape)}"
        )
    return torch.where(mask, kl_coef * token_kl.detach().to(dtype), 0.0)


def _flat_rewards(rewards) -> torch.Tensor:
    values = torch.as_tensor(rewards)
    if not values.is_floating_point():
        values = values.to(torch.float32)
    return values.reshape(-1)


@torch.no_grad()
def reinforce_plus_plus_advantages(
    rewards: torch.Tensor | Sequence[float],
    response_mask: torch.Tensor,
    group_ids: Any | None = None,
    *,
    gamma: float = 1.0,
    token_kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    eps: float = 1e-8,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++ (batch-level baseline; `group_ids` is accepted and ignored).

    1. token reward r_t = [t is the last response token] * R - kl_coef * kl_t
       (kl_t: a per-token KL estimate between policy and reference, see algos.kl;
       this is "KL in the reward");
    2. returns G_t = r_t + gamma * G_{t+1} (see `discounted_returns`);
    3. advantages = `masked_whiten(G, mask)` over all valid tokens of the batch.
    """
    values = _flat_rewards(rewards)
    mask = _check_mask(response_mask, values.numel())
    ok = _check_valid(valid, values)
    dtype = _out_dtype(values)
    mask = mask & ok[:, None]
    token_rewards = outcome_token_rewards(torch.where(ok, values.double(), 0.0), mask)
    token_rewards = token_rewards - _token_kl_penalty(token_kl, kl_coef, mask, torch.float64)
    returns = discounted_returns(token_rewards, mask, gamma)
    return masked_whiten(returns, mask, eps).to(dtype)


@torch.no_grad()
def reinforce_plus_plus_baseline_advantages(
    rewards: torch.Tensor | Sequence[float],
    response_mask: torch.Tensor,
    group_ids: Any | None = None,
    *,
    token_kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    eps: float = 1e-8,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++-baseline: s_i = R_i - kl_coef * sum_t kl_it; A_i = s_i - mean_g(s);
    broadcast A_i to the response tokens, then `masked_whiten` over the batch."""
    values, index, num_groups, mask, ok, dtype = _prepare(rewards, response_mask, group_ids, valid)
    penalty = _token_kl_penalty(token_kl, kl_coef, mask, torch.float64).sum(dim=1)
    deviation, counts = _group_deviation(values - penalty, index, num_groups, ok)
    per_sample = torch.where(ok & (counts >= 2), deviation, 0.0)
    mask = mask & ok[:, None]
    return masked_whiten(per_sample[:, None] * mask, mask, eps).to(dtype)


AdvantageFn = Callable[..., torch.Tensor]

# Names as verl/EasyR1 users write them (`algorithm.adv_estimator`).
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
    "dr_grpo": drgrpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_plus_plus": reinforce_plus_plus_advantages,
    "reinforce_plus_plus_baseline": reinforce_plus_plus_baseline_advantages,
}


def compute_advantages(
    name: str,
    rewards: torch.Tensor | Sequence[float],
    response_mask: torch.Tensor,
    group_ids: Any | None = None,
    **options: Any,
) -> torch.Tensor:
    """Dispatch on `algorithm.adv_estimator`; `options` are the estimator's keyword options."""
    try:
        estimator = ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; choose one of {sorted(ADVANTAGE_ESTIMATORS)}"
        ) from None
    accepted = {
        p.name
        for p in inspect.signature(estimator).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"advantage estimator {name!r} takes options {sorted(accepted)}, not {unknown}"
        )
    return estimator(rewards, response_mask, group_ids, **options)
