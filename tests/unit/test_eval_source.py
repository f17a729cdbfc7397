"""What `longrl eval` accepts as a model, its data settings, and its usage errors (no model)."""

import argparse
import json

import pytest

from longrl.commands import eval as eval_command
from longrl.config import RunConfig, dump_config
from longrl.eval.errors import EvalError
from longrl.eval.runner import eval_data_config
from longrl.eval.source import ModelSource, base_data_config, resolve_model_source


def _hf_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    return path


def _checkpoint(run, step, base, complete=True, **data):
    directory = run / "checkpoints" / f"step_{step:08d}"
    directory.mkdir(parents=True)
    config = RunConfig.model_validate(
        {"worker": {"actor": {"model": {"model_path": str(base)}}}, "data": data}
    )
    (directory / "config.yaml").write_text(dump_config(config))
    (directory / "model.safetensors").write_bytes(b"")
    (directory / "trainer_state.json").write_text(json.dumps({"step": step}))
    if complete:
        (directory / "COMPLETE").write_text(str(step))
    return directory


def test_hugging_face_directory(tmp_path):
    source = resolve_model_source(_hf_dir(tmp_path / "m"))
    assert source.kind == "hf_model" and source.checkpoint is None
    assert source.model_dir == tmp_path / "m"


def test_training_checkpoint_and_run_directory(tmp_path):
    base = _hf_dir(tmp_path / "base")
    run = tmp_path / "run"
    _checkpoint(run, 1, base)
    newest = _checkpoint(run, 2, base)
    (run / "checkpoints" / "latest").write_text(newest.name)
    direct = resolve_model_source(newest)
    assert direct.kind == "training_checkpoint"
    assert (direct.model_dir, direct.checkpoint, direct.step) == (base, newest, 2)
    from_run = resolve_model_source(run)
    assert from_run.checkpoint == newest and from_run.step == 2


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "not found"),
        ("file", "expected a directory"),
        ("empty", "neither a Hugging Face model directory"),
        ("incomplete", "incomplete training checkpoint"),
        ("run_without_checkpoint", "no complete checkpoint"),
        ("base_gone", "is not a model directory here"),
    ],
)
def test_unusable_sources_are_named(tmp_path, layout, message):
    base = _hf_dir(tmp_path / "base")
    target = tmp_path / "x"
    if layout == "file":
        target.write_text("")
    elif layout == "empty":
        target.mkdir()
    elif layout == "incomplete":
        target = _checkpoint(tmp_path / "run", 3, base, complete=False)
    elif layout == "run_without_checkpoint":
        (target / "checkpoints").mkdir(parents=True)
    elif layout == "base_gone":
        target = _checkpoint(tmp_path / "run", 3, tmp_path / "deleted")
    with pytest.raises(EvalError, match=message):
        resolve_model_source(target)


def test_data_settings_come_from_the_training_run_then_overrides(tmp_path):
    base = _hf_dir(tmp_path / "base")
    checkpoint = _checkpoint(
        tmp_path / "run", 1, base, num_frames=12, max_frames=16, thinking=False
    )
    source = resolve_model_source(checkpoint)
    inherited = base_data_config(source)
    assert (inherited.num_frames, inherited.max_frames, inherited.thinking) == (12, 16, False)
    assert inherited.on_bad_sample == "skip" and inherited.train_files is None
    # Asking for fps drops the run's num_frames (which would otherwise win).
    data = eval_data_config(source, {"fps": 1.0, "max_pixels": 56 * 56}, thinking=True)
    assert (data.fps, data.num_frames, data.max_pixels, data.thinking) == (1.0, None, 3136, True)
    plain = eval_data_config(ModelSource(given=base, model_dir=base), None, None)
    assert plain.thinking is True and plain.num_frames is None


def test_bad_data_settings_are_refused(tmp_path):
    source = ModelSource(given=tmp_path, model_dir=tmp_path)
    with pytest.raises(EvalError, match="unknown data setting"):
        eval_data_config(source, {"train_files": "x.jsonl"}, None)
    with pytest.raises(EvalError, match="bad data setting"):
        eval_data_config(source, {"max_frames": 0}, None)


def _parse(argv):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_missing_paths_exit_2(tmp_path, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text("")
    assert eval_command.run(_parse([str(tmp_path / "nope"), str(data)])) == 2
    assert "model path" in capsys.readouterr().err
    model = _hf_dir(tmp_path / "m")
    assert eval_command.run(_parse([str(model), str(tmp_path / "none.jsonl")])) == 2
    assert "data path" in capsys.readouterr().err


def test_cli_bad_settings_exit_2_before_loading(tmp_path, capsys):
    model = _hf_dir(tmp_path / "m")
    data = tmp_path / "eval.jsonl"
    data.write_text("")
    assert eval_command.run(_parse([str(model), str(data), "--k", "4", "--num-samples", "2"])) == 2
    assert "pass@4 needs at least 4" in capsys.readouterr().err
    for flags, message in (
        (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--max-frames", "0"], "bad data setting"),
    ):
        assert eval_command.run(_parse([str(model), str(data), *flags])) == 2
        assert message in capsys.readouterr().err


def test_cli_frame_flags_and_default_output(tmp_path):
    args = _parse(["m", "d.jsonl", "--num-frames", "8", "--max-pixels", "3136"])
    assert eval_command.data_overrides(args) == {"num_frames": 8, "max_pixels": 3136}
    with pytest.raises(SystemExit):  # --fps and --num-frames are exclusive
        _parse(["m", "d.jsonl", "--fps", "1", "--num-frames", "8"])
    step = tmp_path / "run" / "checkpoints" / "step_00000004"
    assert eval_command.default_out_dir(str(step), "x/eval.jsonl").name == "run-step_00000004-eval"
    assert eval_command.default_out_dir("models/tiny", "eval.jsonl").name == "tiny-eval"
