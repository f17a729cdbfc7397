"""worker.actor.reuse_video_embeddings=false (the vision tower re-run in every pass, the
ablation baseline) trains exactly like the default (one encode per step, reused)."""

import pytest
import torch
from safetensors.torch import load_file

from longrl.config import load_config
from longrl.train.metrics import read_metrics
from longrl.train.rl import run_rl
from tests.e2e.conftest import rl_overrides


def _run(checkpoint, data, out, reuse: bool):
    overrides = rl_overrides(
        checkpoint,
        data,
        out,
        **{
            "trainer.max_steps": 2,
            # Two epochs: the old log-prob pass runs too; the KL loss (default) loads the
            # reference. Update micro-batches hold one group (n=4 sequences) each.
            "worker.actor.ppo_epochs": 2,
            "worker.actor.reuse_video_embeddings": str(reuse).lower(),
        },
    )
    run_dir = run_rl(load_config(None, overrides))
    rows = read_metrics(run_dir / "metrics.jsonl")
    weights = load_file(str(run_dir / "checkpoints" / "step_00000002" / "model.safetensors"))
    return rows, weights


def _numbers(row):
    skipped = ("time/", "throughput/", "vision/")
    return {k: v for k, v in row.items() if not k.startswith(skipped)}


def test_re_encoding_every_pass_gives_the_same_training(tiny_vl_checkpoint, synth_data, tmp_path):
    reused, reused_weights = _run(tiny_vl_checkpoint, synth_data, tmp_path / "reuse", True)
    naive, naive_weights = _run(tiny_vl_checkpoint, synth_data, tmp_path / "naive", False)
    for a, b in zip(reused, naive, strict=True):
        # Encoded once (rollout, both prompts' videos in one call) and reused everywhere.
        assert a["vision/encode_calls"] == 1 and a["vision/items_encoded"] == 2
        assert a["vision/reference_encode_calls"] == 0
        # Rollout 1 + old log-probs 1 (both groups in one micro-batch) + update
        # 2 epochs x 2 micro-batches; the reference's own tower once.
        assert b["vision/encode_calls"] == 1 + 1 + 4 and b["vision/items_encoded"] == 2 + 2 + 4
        assert b["vision/reference_encode_calls"] == 1
        assert b["vision/frames_encoded"] == 4 * a["vision/frames_encoded"]
        x, y = _numbers(a), _numbers(b)
        assert x.keys() == y.keys()
        for key in x:
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-5), key
    assert reused_weights.keys() == naive_weights.keys()
    for key, value in reused_weights.items():
        torch.testing.assert_close(naive_weights[key], value, rtol=1e-5, atol=1e-5, msg=key)


def test_reuse_off_is_refused_with_the_embedding_cache(tmp_path):
    with pytest.raises(ValueError, match="reuse_video_embeddings=false"):
        load_config(
            None,
            [
                "worker.actor.reuse_video_embeddings=false",
                f"data.cache_dir={tmp_path / 'cache'}",
            ],
        )
