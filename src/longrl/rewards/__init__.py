"""Reward functions with one signature, `fn(responses, **columns) -> list[float | None]`:
built-ins, user functions loaded from files, per-sample error isolation and
weighted combination. Answer extraction lives in rewards.answer (shared with eval)."""

from longrl.rewards.answer import extract_choice, gold_choice, normalize_text, parse_options
from longrl.rewards.builtin import format_reward, multiple_choice_accuracy, soft_overlong_reward
from longrl.rewards.combine import (
    CombinedReward,
    RewardScores,
    combine,
    mean_of_scored,
    score_metrics,
)
from longrl.rewards.errors import RewardError
from longrl.rewards.loader import load_reward_function
from longrl.rewards.registry import REWARD_FUNCTIONS, resolve_reward_function
from longrl.rewards.safe_call import RewardFn, SafeReward

__all__ = [
    "REWARD_FUNCTIONS",
    "CombinedReward",
    "RewardError",
    "RewardFn",
    "RewardScores",
    "SafeReward",
    "combine",
    "extract_choice",
    "format_reward",
    "gold_choice",
    "load_reward_function",
    "mean_of_scored",
    "multiple_choice_accuracy",
    "normalize_text",
    "parse_options",
    "resolve_reward_function",
    "score_metrics",
    "soft_overlong_reward",
]
