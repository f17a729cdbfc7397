"""RL and SFT with the embedding cache: identical log-probs and losses, no ViT when warm.

The RL metrics of a whole `longrl rl` step with a warm cache are compared with an
uncached step in test_cache_cli.py (the cache filled by `longrl cache`)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from longrl.config import load_config
from longrl.config.sft import SftConfig
from longrl.data.dataset import load_dataset
from longrl.rollout.engine import TorchRolloutEngine
from longrl.train.experience import build_experience, roll_out, score_groups
from longrl.train.metrics import read_metrics
from longrl.train.policy import load_policy, load_reference
from longrl.train.prompts import draw_decodable, encode_prompts
from longrl.train.rl import reward_function, run_rl, sampling_params
from longrl.train.sft import run_sft
from tests.e2e.conftest import rl_overrides

VOLATILE = ("time/", "throughput/", "vision/")


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _experience(config, samples):
    """One RL step's rollout and log-prob passes, as `run_rl` makes them."""
    policy = load_policy(config.worker.actor.model, config.data)
    policy.model.eval()
    reference = load_reference(config.worker.actor.model)
    items = iter(samples)
    drawn = draw_decodable(lambda: next(items), len(samples), config.data, Counter())
    encoded = encode_prompts(policy, drawn, config.data, Counter())
    engine = TorchRolloutEngine(
        policy.model, pad_token_id=policy.pad_token_id, eos_token_ids=policy.eos_token_ids
    )
    groups = roll_out(policy, engine, encoded, sampling_params(config, policy, seed=11))
    score_groups(groups, policy, reward_function(config))
    return build_experience(groups, policy, reference, config, needs_old_log_probs=True)


def test_rl_log_probs_are_identical_with_a_cold_or_warm_cache(
    tiny_vl_checkpoint, synth_data, tmp_path
):
    samples, _ = load_dataset(synth_data / "rl.jsonl", synth_data)
    overrides = rl_overrides(tiny_vl_checkpoint, synth_data, tmp_path / "unused")
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    results = [
        _experience(load_config(None, extra), samples[:2])
        for extra in (overrides, [*overrides, cache], [*overrides, cache])
    ]
    plain, cold, warm = results
    for other in (cold, warm):
        for name in ("rollout_log_probs", "old_log_probs", "ref_log_probs", "advantages"):
            assert torch.equal(getattr(plain, name), getattr(other, name)), name
        responses = [r.tolist() for g in other.groups for r in g.responses]
        assert responses == [r.tolist() for g in plain.groups for r in g.responses]


def test_sft_with_the_cache_learns_the_same(tiny_vl_checkpoint, synth_data, tmp_path):
    def run(name, *extra):
        overrides = {
            "model.model_path": str(tiny_vl_checkpoint),
            "data.train_files": str(synth_data / "sft.jsonl"),
            "data.fps": 2,
            "data.max_frames": 8,
            "sft.batch_size": 2,
            "sft.micro_batch_size": 1,
            "trainer.max_steps": 1,
            "trainer.output_dir": str(tmp_path / name),
            "trainer.logger": "[jsonl]",
        }
        args = [f"{k}={v}" for k, v in overrides.items()]
        config = load_config(None, [*args, *extra], SftConfig)
        return read_metrics(run_sft(config) / "metrics.jsonl")

    # The cold run's inputs equal the uncached ones bit for bit (test_cache_encode.py).
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    cold, warm = run("cold", cache), run("warm", cache)
    assert _comparable(warm) == _comparable(cold)
    assert [r["vision/encode_calls"] for r in cold] == [1]
    assert [r["vision/encode_calls"] for r in warm] == [0]
    # The cache's own counts are in the metrics: cold writes what it misses, warm hits.
    (cold_row,), (warm_row,) = cold, warm
    assert cold_row["vision/cache_misses"] == cold_row["vision/cache_written"] > 0
    assert warm_row["vision/cache_misses"] == warm_row["vision/cache_written"] == 0
    assert warm_row["vision/cache_hits_disk"] == cold_row["vision/cache_misses"]


def test_a_trainable_tower_with_a_cache_is_refused_before_loading(tmp_path):
    config = load_config(
        None,
        [
            f"data.cache_dir={tmp_path}",
            "worker.actor.model.freeze_vision_tower=false",
            f"trainer.output_dir={tmp_path / 'run'}",
        ],
    )
    with pytest.raises(
        NotImplementedError, match=re.escape("data.cache_dir with a trainable vision tower")
    ):
        run_rl(config)
    assert not (tmp_path / "run").exists()
