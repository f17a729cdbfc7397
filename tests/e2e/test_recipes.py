"""Every recipe in configs/ validates; each tiny CPU recipe runs one real RL step."""

from pathlib import Path

import pytest

from longrl.config import load_config
from longrl.train.metrics import read_metrics
from longrl.train.rl import run_rl

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RL_RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if "sft" not in p.name)


@pytest.mark.parametrize("recipe", RL_RECIPES, ids=lambda p: p.stem)
def test_recipe_validates(recipe):
    config = load_config(recipe)
    assert config.worker.actor.model.model_path


@pytest.mark.parametrize(
    "recipe", [p for p in RL_RECIPES if p.stem.startswith("tiny_")], ids=lambda p: p.stem
)
def test_tiny_recipe_runs_one_step(
    recipe, tiny_vl_checkpoint, synth_data, varied_reward_file, tmp_path
):
    overrides = [
        f"worker.actor.model.model_path={tiny_vl_checkpoint}",
        f"data.train_files={synth_data / 'rl.jsonl'}",
        f"trainer.output_dir={tmp_path / 'run'}",
        "trainer.max_steps=1",
        "trainer.logger=[jsonl]",
        "data.max_response_length=12",
        # A reward with spread, so DAPO's filter keeps groups before any learning.
        f"worker.reward.reward_function={varied_reward_file}:length_parity",
    ]
    run_dir = run_rl(load_config(recipe, overrides))
    (row,) = read_metrics(run_dir / "metrics.jsonl")
    assert row["step"] == 1 and row["actor/grad_norm"] > 0
    if load_config(recipe).algorithm.overlong_buffer_length > 0:
        assert "reward/overlong/mean" in row
