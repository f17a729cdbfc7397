import json

import pytest

from longrl.train.metrics import MetricsLogger, read_metrics


def test_jsonl_records_every_step_and_nonfinite_as_null(tmp_path):
    logger = MetricsLogger(tmp_path, ["jsonl"])
    logger.log(1, {"reward/mean": 0.5, "kl": float("nan")})
    logger.log(2, {"reward/mean": 0.75, "kl": 0.01})
    logger.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert rows == [
        {"step": 1, "reward/mean": 0.5, "kl": None},
        {"step": 2, "reward/mean": 0.75, "kl": 0.01},
    ]


def test_resume_drops_steps_after_checkpoint_and_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": s / 10}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "lo')  # killed mid-write
    logger = MetricsLogger(tmp_path, ["jsonl"], resume_step=2)
    logger.log(3, {"loss": 0.33})
    logger.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 0.1), (2, 0.2), (3, 0.33)]


def test_fresh_run_starts_a_new_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 9}\n')
    MetricsLogger(tmp_path, ["jsonl"]).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_console_sink_runs(tmp_path, capsys):
    logger = MetricsLogger(tmp_path, ["console"], total_steps=3)
    logger.log(1, {"reward/mean": 1.0, "loss": 0.5})
    logger.close()
    assert "steps" in capsys.readouterr().err


def test_missing_optional_sink_fails_at_start_with_pip_hint(tmp_path, monkeypatch):
    import longrl.train.metrics as metrics

    monkeypatch.setattr(metrics, "_installed", lambda name: False)
    with pytest.raises(RuntimeError, match="pip install wandb"):
        MetricsLogger(tmp_path, ["jsonl", "wandb"])


def test_tensorboard_sink_writes_readable_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, ["jsonl", "tensorboard"])
    logger.log(1, {"reward/mean": 0.25})
    logger.log(2, {"reward/mean": 0.5})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward/mean")] == [(1, 0.25), (2, 0.5)]
