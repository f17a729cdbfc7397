"""The quickstart's settings: one dataclass, two presets (full and a short CI run)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class QuickstartPlan:
    seed: int = 0
    # Synthetic data (longrl synth).
    num_sft: int = 8192
    num_rl: int = 512
    num_eval: int = 256
    min_frames: int = 16
    max_frames: int = 64
    difficulty: str = "medium"
    # The kinds a 2-layer model can learn: `count` and `distinct` (counting runs) stay
    # at chance at every stage and size tried (docs/quickstart.md). None: the
    # difficulty's kinds.
    kinds: tuple[str, ...] | None = ("first", "last", "after", "before", "longest", "earliest")
    # Relative share of each kind in the SFT split (kind -> weight, 1 if not named).
    sft_kind_weights: dict[str, float] | None = None
    reasoning: str = "timeline"  # synth reasoning style ("timed" or "timeline")
    # Share of each kind's SFT records with a reasoning annotation (kind -> share, 1 if
    # not named); the rest are bare letter answers, learnt with an empty think block
    # (sft.missing_reasoning=empty_think). A quarter of `last`: SFT's greedy model then
    # answers `last` bare (chance: a letter is not learnt, docs/data.md), its samples
    # reason 1 time in 4, and RL learns from the reward to reason there.
    sft_reasoning_shares: dict[str, float] | None = field(default_factory=lambda: {"last": 0.25})
    # SFT targets answer with the option text, not the letter (docs/data.md says why).
    sft_answer: str = "text"
    # Tiny model (longrl tiny-model); keyword sizes of the builder.
    model_sizes: dict[str, Any] = field(default_factory=dict)
    # Frame sampling shared by every stage: `num_sampled_frames` uniformly when set,
    # else `fps` up to `max_sampled_frames`; frames resized to `frame_pixels` pixels.
    fps: float = 2.0
    max_sampled_frames: int = 32
    num_sampled_frames: int | None = 16  # 2 per slot: every scene is seen
    frame_pixels: int = 28 * 28
    # Training stages reuse video embeddings through the on-disk cache (frozen ViT):
    # a video is decoded and encoded once, not once per epoch or per RL step.
    embedding_cache: bool = True
    # SFT.
    sft_steps: int = 800
    sft_batch_size: int = 16
    sft_lr: float = 1e-3
    # RL (GRPO).
    rl_steps: int = 240
    rl_prompts_per_step: int = 8
    rl_group_size: int = 8
    rl_lr: float = 5e-5
    # PPO: each step's rollouts are split into this many mini-batches (one optimizer
    # step each) and passed over `rl_ppo_epochs` times; the clipped ratio keeps the
    # later updates near the policy that sampled them.
    rl_minibatches: int = 1
    rl_ppo_epochs: int = 1
    rl_temperature: float = 1.0
    # KL to the SFT model keeps the reading steps (whose tokens the reward does not
    # decide) from drifting; 0: no KL term, no reference model.
    rl_kl_coef: float = 0.2
    # DAPO dynamic sampling: groups whose samples all score the same teach nothing
    # (zero advantage); they are dropped and the batch is refilled with new prompts.
    rl_online_filtering: bool = False
    rl_max_filter_tries: int = 4
    rl_reward_weights: dict[str, float] = field(
        default_factory=lambda: {"accuracy": 1.0, "format": 0.5}
    )
    max_response_length: int = 160
    # Evaluation.
    eval_batch_size: int = 32

    def shortened(self) -> QuickstartPlan:
        """A few steps of everything: proves each stage runs (CI), learns nothing."""
        return replace(
            self,
            num_sft=16,
            num_rl=16,
            num_eval=8,
            max_frames=32,
            sft_steps=3,
            sft_batch_size=4,
            rl_steps=2,
            rl_prompts_per_step=2,
            rl_group_size=4,
            eval_batch_size=8,
        )


class PlanOverrideError(ValueError):
    """A `--set FIELD=VALUE` that names no plan field or gives a value of the wrong type."""


def apply_overrides(plan: QuickstartPlan, assignments: list[str]) -> QuickstartPlan:
    """`plan` with `FIELD=VALUE` assignments applied; VALUE is JSON (`num_sft=1024`,
    `kinds=["first","last"]`, `sft_kind_weights={"last":0.1}`) or else a plain string."""
    known = {f.name: f for f in fields(QuickstartPlan)}
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise PlanOverrideError(
                f"--set {assignment!r}: expected FIELD=VALUE with FIELD one of "
                f"{', '.join(sorted(known))}"
            )
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        changes[name] = _checked(name, value, str(known[name].type))
    return replace(plan, **changes)


def _checked(name: str, value: Any, annotation: str) -> Any:
    """`value` as the field's annotated type (`int | None`, `tuple[str, ...]`, ...), or an error."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None and optional:
        return None
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base == "str" and isinstance(value, str):
        return value
    if (
        base.startswith("tuple[str")
        and isinstance(value, list)
        and all(isinstance(v, str) for v in value)
    ):
        return tuple(value)
    if base.startswith("dict[") and isinstance(value, dict):
        return value
    raise PlanOverrideError(f"--set {name}: expected {annotation} (as JSON), got {value!r}")
