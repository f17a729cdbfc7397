"""The RL trainer on several gloo processes: DP and SP runs equal one process.

Each run is `run_rl` in forked workers with the torchrun environment (see
dist_launch), one thread each. References run the same way in one worker, so
every compared run has the same thread count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from longrl.train.metrics import read_metrics

from .dist_launch import run_workers

# Rewards that differ between prompts (and, by length parity, between samples).
REWARD_SOURCE = '''
def by_prompt(responses, problem_id, **columns):
    return [int(p.split("-")[2]) % 3 / 2 + len(t) % 2 for t, p in zip(responses, problem_id)]


def half_with_signal(responses, problem_id, **columns):
    """Groups of odd-numbered prompts all score 0: DAPO filters them out."""
    return [len(t) % 2 if int(p.split("-")[2]) % 2 == 0 else 0.0
            for t, p in zip(responses, problem_id)]
'''


def rl_inputs(tmp_path_factory) -> Path:
    """Tiny checkpoint, synthetic data and reward file, built once per session."""
    root = tmp_path_factory.getbasetemp() / "rl_dist_inputs"
    if not (root / "done").exists():
        from longrl.data.synth import SynthConfig, write_dataset
        from longrl.models.tiny import build_tiny_checkpoint

        build_tiny_checkpoint(root / "model", kind="qwen2_5_vl")
        write_dataset(root / "data", SynthConfig(seed=0, num_sft=2, num_rl=16, max_frames=48))
        (root / "rewards.py").write_text(REWARD_SOURCE)
        (root / "done").write_text("")
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return rl_inputs(tmp_path_factory)


def overrides(inputs: Path, out: Path, **extra) -> list[str]:
    base = {
        "worker.actor.model.model_path": inputs / "model",
        "data.train_files": inputs / "data" / "rl.jsonl",
        "data.rollout_batch_size": 2,
        "worker.actor.global_batch_size": 2,
        "worker.rollout.n": 4,
        "data.max_response_length": 12,
        "data.fps": 2,
        "data.max_frames": 16,
        "trainer.max_steps": 2,
        "trainer.output_dir": out,
        "trainer.logger": "[jsonl]",
        "trainer.collective_timeout_s": 60,
        "worker.actor.optim.lr": 1e-3,
        "worker.reward.reward_function": f"{inputs / 'rewards.py'}:by_prompt",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def _train(args: list[str]) -> None:
    from longrl.config import load_config
    from longrl.train.rl import run_rl

    run_rl(load_config(None, args))


def train(world: int, args: list[str], sp: int = 1) -> Path:
    args = [*args, f"worker.actor.ulysses_sequence_parallel_size={sp}"]
    run_workers(_train, world, args, timeout=180)
    return Path(next(a for a in args if a.startswith("trainer.output_dir=")).split("=", 1)[1])


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    step = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run_dir / "checkpoints" / step / "model.safetensors"))


def assert_same_training(a: Path, b: Path, *, weight_atol: float = 5e-5) -> float:
    """Same sampled tokens and rewards, log-prob statistics within float tolerance, and
    weights within a few Adam steps' worth of float noise (lr 1e-3); returns the largest
    weight difference."""
    rows_a, rows_b = read_metrics(a / "metrics.jsonl"), read_metrics(b / "metrics.jsonl")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [1, 2]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ra:
            if key.startswith(("time/", "throughput/", "vision/")):
                continue
            if key.startswith(("reward", "response", "batch/", "accuracy", "data/")):
                assert ra[key] == rb[key], key  # same tokens were sampled
            else:
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
    assert rows_a[0]["actor/grad_norm"] > 0.1  # the step had signal: the comparison means something
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < weight_atol
    return worst


# DP: two mini-batches per step split over the replicas, REINFORCE++ (whitening over the
# global batch), KL loss against the reference. Greedy rollout: the tokens depend on the
# weights only, not on how the batch is split across random streams.
DP_RECIPE = {
    "data.rollout_batch_size": 4,
    "worker.actor.global_batch_size": 2,
    "worker.rollout.n": 2,
    "worker.rollout.temperature": 0,
    "algorithm.adv_estimator": "reinforce_plus_plus",
}


@pytest.fixture(scope="session")
def dp_reference(tmp_path_factory) -> Path:
    """One process, replicated weights: the reference of the DP and FSDP tests alike."""
    inputs = rl_inputs(tmp_path_factory)
    return train(1, overrides(inputs, tmp_path_factory.mktemp("dp1") / "run", **DP_RECIPE))


@pytest.mark.dist
def test_dp2_equals_dp1_with_the_same_global_batch(inputs, dp_reference, tmp_path):
    dp2 = train(2, overrides(inputs, tmp_path / "dp2", **DP_RECIPE))
    assert_same_training(dp_reference, dp2)
    one, two = read_metrics(dp_reference / "metrics.jsonl"), read_metrics(dp2 / "metrics.jsonl")
    for a, b in zip(one, two, strict=True):
        # Each replica encoded only its own prompts' videos: half of the frames.
        assert b["vision/frames_encoded"] == a["vision/frames_encoded"]
        assert b["vision/frames_per_rank_max"] < a["vision/frames_per_rank_max"]


@pytest.mark.dist
def test_full_rl_step_at_sp2_x_dp2_equals_one_process(inputs, dp_reference, tmp_path):
    run = train(4, overrides(inputs, tmp_path / "sp2dp2", **DP_RECIPE), sp=2)
    assert_same_training(dp_reference, run)
    for row in read_metrics(run / "metrics.jsonl"):
        # 4 ranks, each video's frames split over an SP pair: a quarter of the frames each.
        assert row["vision/frames_per_rank_max"] * 4 >= row["vision/frames_encoded"]
        assert row["vision/frames_per_rank_max"] * 4 <= row["vision/frames_encoded"] + 8


@pytest.mark.dist
@pytest.mark.parametrize(
    "frozen_vision",
    [True, pytest.param(False, marks=pytest.mark.slow)],
    ids=["frozen_vit", "trainable_vit"],
)
def test_sp2_rl_steps_equal_sp1(inputs, tmp_path, frozen_vision):
    extra = {"worker.actor.model.freeze_vision_tower": str(frozen_vision).lower()}
    # Sampling at temperature 1: both SP ranks, and the SP=1 run, draw from one seed.
    sp1 = train(1, overrides(inputs, tmp_path / "sp1", **extra))
    sp2 = train(2, overrides(inputs, tmp_path / "sp2", **extra), sp=2)
    assert_same_training(sp1, sp2)
    for a, b in zip(
        read_metrics(sp1 / "metrics.jsonl"), read_metrics(sp2 / "metrics.jsonl"), strict=True
    ):
        # Every frame encoded once, half on each rank (rollout, and the update if it trains),
        # up to one temporal patch group (2 frames) per split video.
        assert b["vision/frames_encoded"] == a["vision/frames_encoded"]
        assert a["vision/frames_encoded"] <= b["vision/frames_per_rank_max"] * 2
        assert b["vision/frames_per_rank_max"] * 2 <= a["vision/frames_encoded"] + 4


@pytest.mark.dist
@pytest.mark.slow
def test_dapo_top_up_rounds_agree_across_replicas(inputs, tmp_path):
    args = overrides(
        inputs,
        tmp_path / "dapo",
        **{
            "data.rollout_batch_size": 4,
            "worker.actor.global_batch_size": 2,
            "algorithm.online_filtering": "true",
            "algorithm.max_filter_tries": 8,
            "worker.reward.reward_function": f"{inputs / 'rewards.py'}:half_with_signal",
        },
    )
    run = train(2, args)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["batch/groups"] for r in rows] == [4.0, 4.0]
    # Half the groups have no signal, so some replica needed a top-up round.
    assert max(r["batch/rollout_rounds"] for r in rows) >= 2


@pytest.mark.dist
@pytest.mark.slow
def test_dp2_resume_reaches_the_same_weights_as_a_straight_run(inputs, tmp_path):
    recipe = {**DP_RECIPE, "trainer.save_freq": 1, "trainer.max_steps": 3}
    straight = train(2, overrides(inputs, tmp_path / "straight", **recipe))
    stopped = overrides(inputs, tmp_path / "resumed", **{**recipe, "trainer.max_steps": 2})
    train(2, stopped)
    resumed = train(2, overrides(inputs, tmp_path / "resumed", **recipe))  # resume=auto
    a, b = final_weights(straight), final_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[2]["reward/mean"] == read_metrics(straight / "metrics.jsonl")[2]["reward/mean"]
