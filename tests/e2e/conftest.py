"""Shared e2e fixtures: a tiny checkpoint and a small synthetic dataset, built once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_vl_checkpoint(tmp_path_factory):
    from longrl.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", kind="qwen2_5_vl")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    from longrl.data.synth import SynthConfig, write_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, SynthConfig(seed=0, num_sft=8, num_rl=16, num_eval=8, max_frames=48))
    return out


@pytest.fixture(scope="session")
def varied_reward_file(tmp_path_factory):
    """A user reward with spread, so groups have signal before any learning."""
    path = tmp_path_factory.mktemp("reward") / "my_reward.py"
    path.write_text(
        "def length_parity(responses, **columns):\n"
        "    return [float(len(text) % 2) for text in responses]\n"
    )
    return path


def rl_overrides(model, data, out, **extra):
    base = {
        "worker.actor.model.model_path": str(model),
        "data.train_files": str(data / "rl.jsonl"),
        "data.rollout_batch_size": 2,
        "worker.actor.global_batch_size": 2,
        "worker.rollout.n": 4,
        "data.max_response_length": 12,
        "data.fps": 2,
        "data.max_frames": 16,
        "trainer.max_steps": 3,
        "trainer.output_dir": str(out),
        "trainer.logger": "[jsonl]",
        "worker.actor.optim.lr": 1e-3,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
