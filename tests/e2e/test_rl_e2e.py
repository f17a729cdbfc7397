import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from longrl.config import load_config
from longrl.train.metrics import read_metrics
from longrl.train.rl import run_rl
from tests.e2e.conftest import rl_overrides

REQUIRED_METRICS = {
    "reward/mean",
    "reward/std",
    "reward/total/mean",
    "reward/accuracy/scored_fraction",
    "reward/format/mean",
    "accuracy",
    "response_length/mean",
    "actor/pg_clipfrac_low",
    "actor/pg_clipfrac_high",
    "kl",
    "entropy",
    "actor/grad_norm",
    "actor/lr",
    "throughput/response_tokens_per_s",
    "time/rollout_s",
    "time/update_s",
    "time/step_s",
    "vision/encode_calls",
    "vision/items_encoded",
}


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_three_rl_steps_change_parameters_and_log_metrics(tiny_vl_checkpoint, synth_data, tmp_path):
    config = load_config(None, rl_overrides(tiny_vl_checkpoint, synth_data, tmp_path / "run"))
    run_dir = run_rl(config)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        missing = REQUIRED_METRICS - set(row)
        assert not missing, missing
        # Each video is encoded once per step: one ViT call for the batch, one item per prompt.
        assert row["vision/encode_calls"] == 1
        assert row["vision/items_encoded"] == 2
    final = run_dir / "checkpoints" / "step_00000003"
    from longrl.models.load import load_model

    before = load_model(tiny_vl_checkpoint).state_dict()
    after = _weights(final)
    changed = [k for k in after if "visual" not in k and not torch.equal(before[k], after[k])]
    assert len(changed) > 10
    # The vision tower is frozen by default.
    frozen = [k for k in after if "visual" in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


@pytest.mark.parametrize(
    "variant",
    [
        {
            "algorithm.adv_estimator": "drgrpo",
            "worker.actor.loss_agg_mode": "seq-mean-token-sum-norm",
        },
        {"algorithm.adv_estimator": "rloo", "algorithm.disable_kl": "true"},
        {
            "algorithm.adv_estimator": "reinforce_plus_plus",
            "algorithm.use_kl_loss": "false",
            "worker.actor.loss_agg_mode": "token-mean",
        },
        {
            "algorithm.online_filtering": "true",
            "algorithm.max_filter_tries": 6,
            "worker.actor.clip_ratio_high": 0.28,
            "worker.actor.ppo_epochs": 2,
        },
    ],
    ids=["drgrpo", "rloo", "reinforce_pp_kl_in_reward", "dapo"],
)
def test_algorithm_variants_run_a_step(
    tiny_vl_checkpoint, synth_data, varied_reward_file, tmp_path, variant
):
    overrides = rl_overrides(
        tiny_vl_checkpoint,
        synth_data,
        tmp_path / "run",
        **{
            "trainer.max_steps": 1,
            "worker.reward.reward_function": f"{varied_reward_file}:length_parity",
            **variant,
        },
    )
    run_dir = run_rl(load_config(None, overrides))
    (row,) = read_metrics(run_dir / "metrics.jsonl")
    assert "reward/" + f"{varied_reward_file}:length_parity/mean" in row
    assert row["actor/grad_norm"] > 0
    if variant.get("algorithm.use_kl_loss") == "false":
        assert "kl" in row  # KL in the reward is still reported
    if variant.get("algorithm.online_filtering") == "true":
        assert row["batch/groups"] == 2 and row["batch/rollout_rounds"] >= 1


def _comparable(rows):
    return [
        {k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows
    ]


def test_same_seed_same_metrics(tiny_vl_checkpoint, synth_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        config = load_config(
            None,
            rl_overrides(
                tiny_vl_checkpoint, synth_data, tmp_path / name, **{"trainer.max_steps": 2}
            ),
        )
        runs.append(_comparable(read_metrics(run_rl(config) / "metrics.jsonl")))
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_weights(tiny_vl_checkpoint, synth_data, tmp_path):
    common = {"trainer.max_steps": 6, "trainer.save_freq": 1, "trainer.save_limit": 2}
    straight = run_rl(
        load_config(
            None, rl_overrides(tiny_vl_checkpoint, synth_data, tmp_path / "straight", **common)
        )
    )
    killed_dir = tmp_path / "killed"
    args = rl_overrides(tiny_vl_checkpoint, synth_data, killed_dir, **common)
    proc = subprocess.Popen(
        [sys.executable, "-m", "longrl.cli", "rl", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = killed_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if latest.exists() and latest.read_text().strip() >= "step_00000003":
            break
        assert proc.poll() is None, "training exited before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest.read_text().strip()
    assert killed_at < "step_00000006", "the run finished before the kill; nothing was tested"
    resumed = run_rl(load_config(None, args))  # trainer.resume=auto
    a = _weights(straight / "checkpoints" / "step_00000006")
    b = _weights(resumed / "checkpoints" / "step_00000006")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert _comparable(read_metrics(resumed / "metrics.jsonl")) == _comparable(
        read_metrics(straight / "metrics.jsonl")
    )


def test_trainable_vision_tower_is_updated_and_re_encoded_in_the_update(
    tiny_vl_checkpoint, synth_data, varied_reward_file, tmp_path
):
    from longrl.models.load import load_model

    overrides = rl_overrides(
        tiny_vl_checkpoint,
        synth_data,
        tmp_path / "run",
        **{
            "trainer.max_steps": 1,
            "worker.actor.model.freeze_vision_tower": "false",
            "worker.reward.reward_function": f"{varied_reward_file}:length_parity",
        },
    )
    run_dir = run_rl(load_config(None, overrides))
    (row,) = read_metrics(run_dir / "metrics.jsonl")
    # Rollout encodes once; the update re-encodes with gradients in each of its two
    # micro-batches (4 sequences = 1 group each); the reference model uses its own
    # tower (not counted here), since the policy's no longer equals it.
    assert row["vision/encode_calls"] == 1 + 2
    before = load_model(tiny_vl_checkpoint).state_dict()
    after = _weights(run_dir / "checkpoints" / "step_00000001")
    visual = [k for k in after if "visual" in k]
    assert any(not torch.equal(before[k], after[k]) for k in visual)
