import re
import subprocess
import sys
import textwrap

import pytest

from longrl.config import ConfigError, RunConfig, dump_config, load_config
from longrl.config.loader import validate_tree


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_validate_and_round_trip_through_yaml(tmp_path):
    config = load_config(None)
    assert isinstance(config, RunConfig)
    again = load_config(_recipe(tmp_path, dump_config(config)))
    assert again == config


def test_recipe_then_overrides_win_and_values_are_parsed_as_yaml(tmp_path):
    recipe = _recipe(
        tmp_path,
        """
        data: {fps: 1.0, rollout_batch_size: 4}
        worker:
          rollout: {n: 4}
          actor: {global_batch_size: 2, optim: {lr: 1.0e-5}}
        trainer: {logger: [console]}
        """,
    )
    config = load_config(
        recipe,
        ["worker.rollout.n=8", "worker.actor.optim.lr=3e-6", "trainer.logger=[jsonl, console]"],
    )
    assert config.data.fps == 1.0
    assert config.worker.rollout.n == 8
    assert config.worker.actor.optim.lr == pytest.approx(3e-6)
    assert config.trainer.logger == ["jsonl", "console"]
    assert config.worker.actor.global_batch_size == 2


def test_unknown_key_in_recipe_names_key_and_suggests(tmp_path):
    recipe = _recipe(tmp_path, "worker:\n  rollout:\n    temprature: 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_config(recipe)
    message = str(err.value)
    assert "worker.rollout.temprature" in message
    assert "Did you mean worker.rollout.temperature" in message
    assert str(recipe) in message


def test_unknown_override_key_lists_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["worker.rollot.n=3"])
    message = str(err.value)
    assert "worker.rollot" in message and "rollout" in message and "Allowed under worker" in message


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["worker.rollout.n=many"])
    assert "worker.rollout.n" in str(err.value) and "'many'" in str(err.value)


def test_literal_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["algorithm.adv_estimator=ppo"])
    message = str(err.value)
    assert "algorithm.adv_estimator" in message and "grpo" in message and "rloo" in message


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match=r"worker.rollout.n is a value"):
        load_config(None, ["worker.rollout.n.x=1"])


def test_malformed_override_and_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        load_config(None, ["worker.rollout.n"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = _recipe(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_cross_section_batch_sizes_checked():
    with pytest.raises(ConfigError, match="global_batch_size"):
        load_config(None, ["data.rollout_batch_size=8", "worker.actor.global_batch_size=3"])


def test_long_rl_and_easyr1_aliases_map_to_our_keys(tmp_path):
    recipe = _recipe(
        tmp_path,
        """
        worker:
          actor: {cached_embeds_dir: /data/embeds}
          reward: {score_function: ./my_reward.py:score}
        trainer: {save_checkpoint_path: /ckpt}
        """,
    )
    config = load_config(recipe)
    assert config.data.cache_dir == "/data/embeds"
    assert config.worker.reward.reward_function == "./my_reward.py:score"
    assert config.trainer.output_dir == "/ckpt"
    assert load_config(None, ["worker.actor.cached_embeds_dir=/x"]).data.cache_dir == "/x"


def test_conflicting_alias_and_key_is_an_error(tmp_path):
    recipe = _recipe(tmp_path, "data: {cache_dir: /a}\nworker:\n  actor: {cached_embeds_dir: /b}\n")
    with pytest.raises(ConfigError, match="alias"):
        load_config(recipe)


def test_reward_weights_override_edits_default_mapping():
    config = load_config(None, ["worker.reward.functions.format=0"])
    assert config.worker.reward.functions == {"accuracy": 1.0, "format": 0.0}


def test_reference_model_follows_kl_settings():
    assert load_config(None).uses_reference_model
    assert not load_config(None, ["algorithm.disable_kl=true"]).uses_reference_model
    assert not load_config(None, ["worker.ref.enable=false"]).uses_reference_model


def test_frame_bounds_validated():
    with pytest.raises(ConfigError, match="max_frames"):
        validate_tree({"data": {"max_frames": 9000}}, RunConfig)
    with pytest.raises(ConfigError, match="min_frames"):
        validate_tree({"data": {"min_frames": 64, "max_frames": 32}}, RunConfig)


def test_cli_config_command_prints_resolved_config_and_fails_with_code_2():
    ok = subprocess.run(
        [sys.executable, "-m", "longrl.cli", "config", "worker.rollout.n=3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "n: 3" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "longrl.cli", "config", "worker.rollout.zz=3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "worker.rollout.zz" in bad.stderr


def test_help_is_lazy_no_torch_import():
    code = (
        "import sys, contextlib, io\n"
        "from longrl.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "from longrl.cli import COMMANDS\n"
        "for cmd in COMMANDS:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([cmd, '--help'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'av', 'pyarrow') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"`longrl --help` imported heavy modules: {out}"


def test_docs_config_reference_is_up_to_date():
    from pathlib import Path

    from longrl.config.reference import config_reference

    docs = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert docs.read_text() == config_reference(RunConfig), (
        "docs/config.md is stale: run `longrl config --reference > docs/config.md`"
    )


def test_options_may_sit_between_overrides(capsys):
    from longrl.cli import main

    recipe = "configs/tiny_grpo.yaml"
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    code = main(["rl", str(root / recipe), "--print-config", "worker.rollout.n=3"])
    assert code == 0
    assert "  n: 3" in capsys.readouterr().out


def test_gradient_checkpointing_refuses_prefix_sharing_in_the_update():
    checkpointing = "worker.actor.model.enable_gradient_checkpointing=true"
    with pytest.raises(ConfigError, match=re.escape("worker.actor.share_prompt_prefix=false")):
        load_config(None, [checkpointing])
    config = load_config(None, [checkpointing, "worker.actor.share_prompt_prefix=false"])
    assert not config.worker.actor.share_prompt_prefix
