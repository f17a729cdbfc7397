"""`trainer.*`: run length, logging, checkpoints, resume."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longrl.config.base import Section


class TrainerConfig(Section):
    project_name: str = "longrl"
    experiment_name: str = "run"
    output_dir: str = Field("runs/run", description="Run directory: metrics, checkpoints, config.")
    total_epochs: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Stop after this many steps.")
    seed: int = 1
    logger: list[Literal["console", "jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["console", "jsonl"]
    )
    save_freq: int = Field(-1, description="Checkpoint every N steps; -1 only at the end.")
    save_limit: int = Field(2, description="Keep the newest N checkpoints; -1 keeps all.")
    resume: str = Field("auto", description="'auto' (latest in output_dir), 'none', or a path.")
    val_freq: int = Field(-1, description="Validate every N steps; -1 disables.")
    val_before_train: bool = False
    nnodes: int = Field(1, gt=0)
    n_gpus_per_node: int = Field(1, gt=0, description="Processes per node (CPU: processes).")
    collective_timeout_s: float = Field(
        600.0, gt=0, description="A collective that waits longer fails every rank with an error."
    )
