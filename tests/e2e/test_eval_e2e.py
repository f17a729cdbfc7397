"""`longrl eval` for real: the tiny model on 16 synthetic questions, and a training checkpoint."""

import argparse
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from longrl.commands import eval as eval_command
from longrl.config import load_config
from longrl.eval import EvalError, evaluate
from longrl.eval.source import load_eval_policy, resolve_model_source
from longrl.rewards.answer import extract_choice
from longrl.train.rl import run_rl
from tests.e2e.conftest import rl_overrides


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    from longrl.data.synth import SynthConfig, write_dataset

    out = tmp_path_factory.mktemp("synth_eval") / "data"
    write_dataset(out, SynthConfig(seed=0, num_sft=8, num_rl=8, num_eval=16, max_frames=48))
    return out


@pytest.fixture(scope="module")
def trained_run(tiny_vl_checkpoint, eval_data, tmp_path_factory):
    """One RL step of the tiny model: a run dir with checkpoints/step_00000001."""
    out = tmp_path_factory.mktemp("rl") / "run"
    overrides = rl_overrides(
        tiny_vl_checkpoint,
        eval_data,
        out,
        **{
            "trainer.max_steps": 1,
            "worker.rollout.n": 2,
            "data.max_response_length": 4,
            "data.max_frames": 8,
        },
    )
    return run_rl(load_config(None, overrides))


def _records(path):
    return {r["problem_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _check_consistent(report_json, predictions, records, n):
    metrics = report_json["metrics"]
    correct = [c for row in predictions for c in row["correct"]]
    assert metrics["num_questions"] == len(predictions)
    assert metrics["num_responses"] == len(correct) == n * len(predictions)
    assert metrics["accuracy"] == pytest.approx(sum(correct) / len(correct))
    lengths = [x for row in predictions for x in row["response_length"]]
    assert metrics["mean_response_length"] == pytest.approx(sum(lengths) / len(lengths))
    missing = [e is None for row in predictions for e in row["extracted"]]
    assert metrics["extraction_failure_rate"] == pytest.approx(sum(missing) / len(missing))
    per_type = report_json["per_type"]
    assert sum(t["num_questions"] for t in per_type.values()) == metrics["num_questions"]
    for kind, t in per_type.items():
        rows = [row for row in predictions if row["problem_type"] == kind]
        assert t["num_questions"] == len(rows)
    for row in predictions:
        record = records[row["problem_id"]]
        assert row["problem_type"] == record["problem_type"]
        assert row["answer"] == extract_choice(record["answer"], record["options"])
        assert len(row["responses"]) == len(row["correct"]) == len(row["format_ok"]) == n
        for text, extracted, ok in zip(
            row["responses"], row["extracted"], row["correct"], strict=True
        ):
            assert extracted == extract_choice(text, record["options"])
            assert ok == (extracted == row["answer"])
        assert row["num_correct"] == sum(row["correct"])


def test_cli_greedy_on_tiny_model(tiny_vl_checkpoint, eval_data, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(
        [str(tiny_vl_checkpoint), str(eval_data / "eval.jsonl"), "--out", str(out),
         "--max-new-tokens", "6", "--max-frames", "8", "--batch-size", "8", "--no-progress"]
    )  # fmt: skip
    assert eval_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and str(out / "report.json") in printed

    report = json.loads((out / "report.json").read_text())
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().split("\n") if line
    ]
    records = _records(eval_data / "eval.jsonl")
    assert len(predictions) == 16 and report["skipped"]["total"] == 0
    assert [row["problem_id"] for row in predictions] == list(records)  # file order
    _check_consistent(report, predictions, records, n=1)
    assert report["settings"]["temperature"] == 0.0 and report["settings"]["thinking"] is True
    assert report["settings"]["data"]["max_frames"] == 8
    assert len(report["per_type"]) == 8  # the 8 synthetic question kinds, 2 each
    assert all(x <= 6 for row in predictions for x in row["response_length"])
    for row in predictions:  # a response without a stop token ran to max_new_tokens
        if not row["finished"][0]:
            assert row["response_length"][0] == 6


def test_training_checkpoint_is_loaded_and_evaluated(
    tiny_vl_checkpoint, eval_data, trained_run, tmp_path
):
    checkpoint = trained_run / "checkpoints" / "step_00000001"
    # The evaluated weights are the checkpoint's, not the base model's.
    policy = load_eval_policy(resolve_model_source(checkpoint), data=_data())
    saved = load_file(str(checkpoint / "model.safetensors"))
    state = policy.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    from longrl.models.load import load_model

    base = load_model(tiny_vl_checkpoint).state_dict()
    assert any(not torch.equal(base[k], v) for k, v in saved.items())

    report = evaluate(
        trained_run, eval_data / "eval.jsonl", out_dir=tmp_path / "out", k=2,
        max_new_tokens=4, max_samples=4, batch_size=4, progress=False,
    )  # fmt: skip
    model = report.settings["model"]
    assert model["kind"] == "training_checkpoint" and model["step"] == 1
    assert model["checkpoint"] == str(checkpoint)
    assert report.settings["n"] == 2 and report.settings["temperature"] == 1.0
    assert report.settings["data"]["max_frames"] == 8  # inherited from the run
    saved_report = json.loads(report.report_path.read_text())
    predictions = [json.loads(x) for x in report.predictions_path.read_text().splitlines()]
    _check_consistent(saved_report, predictions, _records(eval_data / "eval.jsonl"), n=2)
    any_correct = [float(any(row["correct"])) for row in predictions]
    assert saved_report["metrics"]["pass_at_2"] == pytest.approx(sum(any_correct) / 4)


def test_mismatched_checkpoint_weights_are_refused(trained_run, tmp_path):
    broken = tmp_path / "step_00000001"
    shutil.copytree(trained_run / "checkpoints" / "step_00000001", broken)
    weights = load_file(str(broken / "model.safetensors"))
    dropped = next(k for k in sorted(weights) if "layers.0." in k and "visual" not in k)
    del weights[dropped]
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(EvalError, match=f"do not fit the model.*{dropped}"):
        load_eval_policy(resolve_model_source(broken), data=_data())


def _data():
    from longrl.config.data import DataConfig

    return DataConfig(max_frames=8)


def test_bad_samples_are_skipped_counted_and_named(tiny_vl_checkpoint, eval_data, tmp_path):
    good, broken, numeric, missing, *_ = _records(eval_data / "eval.jsonl").values()
    (tmp_path / "videos").mkdir()
    shutil.copy(eval_data / good["videos"][0], tmp_path / "videos" / "good.mp4")
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video" * 100)
    shutil.copy(eval_data / numeric["videos"][0], tmp_path / "videos" / "numeric.mp4")
    rows = [
        {**good, "videos": ["videos/good.mp4"]},
        {**broken, "videos": ["videos/broken.mp4"]},
        {**numeric, "videos": ["videos/numeric.mp4"], "problem_type": "numerical",
         "answer": "3", "options": None},
        {**missing, "videos": ["videos/absent.mp4"]},
    ]  # fmt: skip
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = evaluate(
        tiny_vl_checkpoint, data, out_dir=tmp_path / "out", max_new_tokens=2,
        data_overrides={"max_frames": 8}, progress=False,
    )  # fmt: skip
    assert report.metrics["num_questions"] == 1
    assert [r.problem_id for r in report.results] == [good["problem_id"]]
    assert report.skipped == {"missing_video": 1, "not_multiple_choice": 1, "video_error": 1}
    saved = json.loads(report.report_path.read_text())["skipped"]
    assert saved["total"] == 3
    examples = saved["examples"]
    assert len(examples) == 3
    # Load-time skips first (file, then scorer), then decode-time skips as they happen.
    assert "mixed.jsonl, line 4" in examples[0] and "absent.mp4" in examples[0]
    assert examples[1].startswith("mixed.jsonl:3: not a multiple-choice question")
    assert examples[2].startswith("mixed.jsonl:2: video_error") and "broken.mp4" in examples[2]


def test_nothing_to_evaluate_is_an_error(tiny_vl_checkpoint, tmp_path):
    data = tmp_path / "open.jsonl"
    data.write_text(
        json.dumps({"problem": "Why?", "answer": "because", "problem_type": "open-ended"}) + "\n"
    )
    with pytest.raises(EvalError, match="no question could be evaluated"):
        evaluate(tiny_vl_checkpoint, data, progress=False)


def test_overlong_prompts_are_skipped(tiny_vl_checkpoint, eval_data, tmp_path):
    with pytest.raises(EvalError, match=r"skipped \{'prompt_too_long': 2\}.*> 20 tokens"):
        evaluate(
            tiny_vl_checkpoint, eval_data / "eval.jsonl", max_samples=2, progress=False,
            data_overrides={"max_prompt_length": 20, "max_frames": 8},
        )  # fmt: skip
