"""Metrics sinks: a JSONL file always; console, TensorBoard, W&B, MLflow when asked.

A sink that is asked for but not installed is an error at start-up (with the
pip command), never a silent no-op halfway through a run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Protocol

METRICS_FILE = "metrics.jsonl"
_PIP_NAMES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class Sink(Protocol):
    def write(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def check_sinks_available(sinks: list[str]) -> None:
    missing = [name for name in sinks if name in _PIP_NAMES and not _installed(name)]
    if missing:
        packages = " ".join(_PIP_NAMES[name] for name in missing)
        raise RuntimeError(
            f"trainer.logger asks for {missing} but they are not installed: "
            f"pip install {packages} (or drop them from trainer.logger)"
        )


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class JsonlSink:
    """One JSON object per step. On resume, lines after the resumed step are dropped."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / METRICS_FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            _truncate_after(self.path, resume_step)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._handle = open(self.path, "a")  # noqa: SIM115 - lives as long as the run

    def write(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _finite_or_none(v) for k, v in metrics.items()}}
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _truncate_after(path: Path, step: int) -> None:
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by a kill mid-write
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


class ConsoleSink:
    """A progress bar with the headline metrics; a plain line per step when not a TTY."""

    HEADLINE = ("reward/mean", "accuracy", "loss", "kl", "response_length/mean", "time/step_s")

    def __init__(self, total_steps: int | None, initial: int = 0) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=initial, desc="steps", file=sys.stderr)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        shown = {
            k.split("/")[0] if k.endswith("/mean") else k: metrics[k]
            for k in self.HEADLINE
            if k in metrics
        }
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class TensorBoardSink:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, project: str, name: str, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project=project, name=name, config=config, dir=str(run_dir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    def __init__(self, project: str, name: str, config: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_experiment(project)
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=name)
        mlflow.log_params(_flat_params(config))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k.replace("/", "."): v for k, v in metrics.items() if math.isfinite(v)}
        self.mlflow.log_metrics(clean, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def _flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class MetricsLogger:
    def __init__(
        self,
        run_dir: str | Path,
        sinks: list[str],
        *,
        project: str = "longrl",
        experiment: str = "run",
        config: dict[str, Any] | None = None,
        total_steps: int | None = None,
        resume_step: int | None = None,
    ) -> None:
        check_sinks_available(sinks)
        run_dir = Path(run_dir)
        self.sinks: list[Sink] = [JsonlSink(run_dir, resume_step)]
        for name in sinks:
            if name == "console":
                self.sinks.append(ConsoleSink(total_steps, initial=resume_step or 0))
            elif name == "tensorboard":
                self.sinks.append(TensorBoardSink(run_dir))
            elif name == "wandb":
                self.sinks.append(WandbSink(run_dir, project, experiment, config or {}))
            elif name == "mlflow":
                self.sinks.append(MlflowSink(project, experiment, config or {}))
            elif name != "jsonl":
                raise ValueError(f"unknown metrics sink {name!r}")

    @property
    def jsonl_path(self) -> Path:
        return self.sinks[0].path

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.write(step, metrics)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def open_run_metrics(
    run_dir: Path, config: Any, total_steps: int, resume_step: int | None
) -> MetricsLogger:
    """The metrics logger of a training run (RL or SFT), from its config's trainer section."""
    return MetricsLogger(
        run_dir,
        config.trainer.logger,
        project=config.trainer.project_name,
        experiment=config.trainer.experiment_name,
        config=config.model_dump(mode="json"),
        total_steps=total_steps,
        resume_step=resume_step,
    )
