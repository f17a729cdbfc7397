"""RL maths as pure functions on tensors: advantages, policy loss, KL, aggregation,
entropy, DAPO filters. No model code, no I/O; variants are picked by config
strings through the plain dicts re-exported here."""

from longrl.algos.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    discounted_returns,
    drgrpo_advantages,
    grpo_advantages,
    masked_whiten,
    outcome_token_rewards,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    rewards_from_scores,
    rloo_advantages,
)
from longrl.algos.aggregate import LOSS_AGG_MODES, aggregate_loss, masked_mean
from longrl.algos.entropy import entropy_from_logits
from longrl.algos.filters import (
    DynamicSamplingExhausted,
    GroupBatchAccumulator,
    keep_groups_with_variance,
)
from longrl.algos.kl import KL_ESTIMATORS, kl_divergence
from longrl.algos.overlong import soft_overlong_penalty
from longrl.algos.policy_loss import PolicyLossOutput, ppo_clip_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "DynamicSamplingExhausted",
    "GroupBatchAccumulator",
    "PolicyLossOutput",
    "aggregate_loss",
    "compute_advantages",
    "discounted_returns",
    "drgrpo_advantages",
    "entropy_from_logits",
    "grpo_advantages",
    "keep_groups_with_variance",
    "kl_divergence",
    "masked_mean",
    "masked_whiten",
    "outcome_token_rewards",
    "ppo_clip_loss",
    "reinforce_plus_plus_advantages",
    "reinforce_plus_plus_baseline_advantages",
    "rewards_from_scores",
    "rloo_advantages",
    "soft_overlong_penalty",
]
