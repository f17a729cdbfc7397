"""W&B (offline) and MLflow (local file store) sinks; run where those are installed
(`pip install wandb mlflow-skinny`), skipped elsewhere."""

import pytest

from longrl.train.metrics import MetricsLogger


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, ["wandb"], project="longrl-test", config={"a": 1})
    logger.log(1, {"reward/mean": 0.25})
    logger.close()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_mlflow_records_params_and_metric_history(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    logger = MetricsLogger(tmp_path, ["mlflow"], project="longrl-test", config={"a": {"b": 1}})
    logger.log(1, {"reward/mean": 0.25})
    logger.log(2, {"reward/mean": 0.5})
    logger.close()
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("longrl-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params == {"a.b": "1"}
    history = client.get_metric_history(run.info.run_id, "reward.mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5)]
