"""The RL trainer with FSDP2 (worker.actor.fsdp.enable): the same training as replicas.

Sharded runs are compared with one process holding the whole model (the references of
test_rl_dist), so sharding, the summed reduce-scatter, the DTensor-aware clipping and
AdamW on shards are all checked against plain training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from longrl.train.metrics import read_metrics

from .test_rl_dist import (
    DP_RECIPE,
    assert_same_training,
    dp_reference,  # noqa: F401 - session fixture shared with test_rl_dist
    final_weights,
    overrides,
    rl_inputs,
    train,
)

FSDP = {"worker.actor.fsdp.enable": "true"}
# A different reward per prompt: signal under greedy decoding whichever prompts are kept.
BY_ID_REWARD = """
def by_id(responses, problem_id, **columns):
    return [int(p.split("-")[2]) / 16 for p in problem_id]
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return rl_inputs(tmp_path_factory)


@pytest.mark.dist
def test_fsdp_dp2_equals_one_process_without_fsdp(inputs, dp_reference, tmp_path):  # noqa: F811
    run = train(2, overrides(inputs, tmp_path / "fsdp_dp2", **DP_RECIPE, **FSDP))
    worst = assert_same_training(dp_reference, run, weight_atol=2e-5)
    print(f"max weight diff {worst:.2e}")


@pytest.mark.dist
def test_fsdp_sp2_x_dp2_equals_one_process(inputs, dp_reference, tmp_path):  # noqa: F811
    run = train(4, overrides(inputs, tmp_path / "fsdp_sp2dp2", **DP_RECIPE, **FSDP), sp=2)
    worst = assert_same_training(dp_reference, run, weight_atol=2e-5)
    print(f"max weight diff {worst:.2e}")


@pytest.mark.dist
@pytest.mark.slow
def test_fsdp_replicas_with_different_group_counts_keep_step(inputs, tmp_path):
    """A prompt over the length limit leaves one replica a group short in step 1: it runs
    a zero-weight pass so the sharded forwards/backwards still pair up, and training
    equals the replicated run with the same uneven shares."""
    reward = tmp_path / "by_id.py"
    reward.write_text(BY_ID_REWARD)
    recipe = {
        **DP_RECIPE,
        "data.max_prompt_length": 173,
        "worker.reward.reward_function": f"{reward}:by_id",
    }
    replicated = train(2, overrides(inputs, tmp_path / "replicated", **recipe))
    sharded = train(2, overrides(inputs, tmp_path / "sharded", **recipe, **FSDP))
    worst = assert_same_training(replicated, sharded, weight_atol=2e-5)
    print(f"max weight diff {worst:.2e}")
    rows = read_metrics(sharded / "metrics.jsonl")
    assert [r["batch/groups"] for r in rows] == [3.0, 4.0]


@pytest.mark.dist
def test_fsdp_sp2_with_a_trainable_vision_tower_equals_sp1(inputs, tmp_path):
    extra = {"worker.actor.model.freeze_vision_tower": "false"}
    sp1 = train(1, overrides(inputs, tmp_path / "sp1", **extra))
    sp2 = train(2, overrides(inputs, tmp_path / "sp2", **extra, **FSDP), sp=2)
    worst = assert_same_training(sp1, sp2, weight_atol=2e-5)
    print(f"max weight diff {worst:.2e}")


@pytest.mark.dist
@pytest.mark.slow
def test_fsdp_resume_reaches_the_same_weights_as_a_straight_run(inputs, tmp_path):
    """Checkpoints hold full tensors gathered from the shards; resuming re-shards them
    (weights and AdamW moments) and continues exactly as the uninterrupted run."""
    recipe = {**DP_RECIPE, **FSDP, "trainer.save_freq": 1}
    straight = train(2, overrides(inputs, tmp_path / "straight", **recipe))
    train(2, overrides(inputs, tmp_path / "resumed", **{**recipe, "trainer.max_steps": 1}))
    resumed = train(2, overrides(inputs, tmp_path / "resumed", **recipe))  # resume=auto
    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys() and "lm_head.weight" not in a  # tied head saved once
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = load_file(str(resumed / "checkpoints" / "step_00000001" / "optimizer.safetensors"))
    # AdamW moments saved whole (not one rank's shard).
    assert first["0.exp_avg"].shape == a["model.language_model.embed_tokens.weight"].shape
    rows = read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert (
        rows[1]["actor/grad_norm"] == read_metrics(straight / "metrics.jsonl")[1]["actor/grad_norm"]
    )


@pytest.mark.dist
def test_fsdp_killed_rank_stops_the_other_within_the_timeout(inputs, tmp_path):
    from .test_rl_dist_launch import fault_args, start_ranks, wait_all

    timeout_s = 30.0
    args = [*fault_args(inputs, tmp_path, "kill", timeout_s), "worker.actor.fsdp.enable=true"]
    procs = start_ranks(args, 2, tmp_path)
    ended = wait_all(procs, limit=120)
    failed_at = float((tmp_path / "failed_at").read_text())
    assert [p.returncode for p in procs] == [1, -9]
    waited = ended[0] - failed_at
    print(f"fsdp kill: rank 0 exited {waited:.2f}s after rank 1 was killed")
    assert waited < timeout_s
    survivor = (tmp_path / "rank0.err").read_text()
    assert "weights sharded (FSDP2)" in survivor
    assert "rank 0 failed: DistributedRunError: rank 0/2 (dp 0/2, sp 1): a collective failed" in (
        survivor
    )


def mixed_records(inputs: Path, out: Path) -> Path:
    """Video and text-only prompts alternating: in file order (no shuffle) one replica
    holds the videos, the other only text."""
    records = []
    for i, line in enumerate((inputs / "data" / "rl.jsonl").read_text().splitlines()[:6]):
        video = json.loads(line)
        video["videos"] = [str(inputs / "data" / v) for v in video["videos"]]
        text = {
            "problem_id": f"text-{i:05d}-0",
            "problem": f"What is {i} plus {i + 1}?",
            "answer": f"<answer>{2 * i + 1}</answer>",
            "problem_type": "text",
            "data_type": "text",
        }
        records += [video, text]
    path = out / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.dist
@pytest.mark.slow
def test_fsdp_replica_without_videos_keeps_step_with_a_trainable_tower(inputs, tmp_path):
    """Replica 0 encodes videos, replica 1 has text only: it embeds its prompts before the
    model like the other and runs the sharded tower on a stand-in clip, so collectives
    pair up; training equals the replicated run."""
    recipe = {
        **DP_RECIPE,
        "data.train_files": mixed_records(inputs, tmp_path),
        "data.shuffle": "false",
        "worker.actor.model.freeze_vision_tower": "false",
    }
    replicated = train(2, overrides(inputs, tmp_path / "replicated", **recipe))
    sharded = train(2, overrides(inputs, tmp_path / "sharded", **recipe, **FSDP))
    worst = assert_same_training(replicated, sharded, weight_atol=2e-5)
    print(f"max weight diff {worst:.2e}")
    for row in read_metrics(sharded / "metrics.jsonl"):
        # One rank encoded every frame (in rollout and in the update); the stand-in
        # calls of the other are not counted.
        assert row["vision/frames_per_rank_max"] == row["vision/frames_encoded"] > 0
