"""`algorithm.*`: advantages, KL, and DAPO's dynamic sampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longrl.config.base import Section


class AlgorithmConfig(Section):
    adv_estimator: Literal["grpo", "drgrpo", "rloo", "reinforce_plus_plus"] = Field(
        "grpo", description="Advantage estimator."
    )
    gamma: float = Field(1.0, ge=0, le=1, description="Discount for REINFORCE++ returns.")
    disable_kl: bool = Field(False, description="No KL term at all (no reference model is loaded).")
    use_kl_loss: bool = Field(
        True, description="KL in the loss (GRPO); false puts it in the reward (REINFORCE++)."
    )
    kl_penalty: Literal["kl", "k1", "k2", "k3", "low_var_kl", "abs", "mse"] = Field(
        "low_var_kl", description="KL estimator (low_var_kl = k3)."
    )
    kl_coef: float = Field(1e-2, ge=0, description="Weight of the KL term.")
    online_filtering: bool = Field(
        False, description="DAPO dynamic sampling: drop groups whose rewards are all equal."
    )
    max_filter_tries: int = Field(
        4, gt=0, description="Rollout rounds tried to fill the batch when filtering."
    )
    overlong_buffer_length: int = Field(
        0, ge=0, description="DAPO soft overlong penalty buffer (tokens); 0 disables it."
    )
    overlong_penalty_factor: float = Field(
        1.0, ge=0, description="Scale of the soft overlong penalty (reaches -factor)."
    )
