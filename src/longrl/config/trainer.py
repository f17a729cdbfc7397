"""`trainer.*`: run length, logging, checkpoints, resume."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longrl.config.base import Section


class TrainerConfig(Section):
    project_name: str = Field("longrl", description="Logger project (W&B/MLflow).")
    experiment_name: str = Field("run", description="Logger run name.")
    output_dir: str = Field("runs/run", description="Run directory: metrics, checkpoints, config.")
    total_epochs: int = Field(1, gt=0, description="Passes over the training records.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many steps.")
    seed: int = Field(1, description="Seed of model init, sampling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description=(
            "Where models and batches live: auto = cuda:LOCAL_RANK when CUDA is available, "
            "else cpu; cuda fails without a GPU; cpu never touches CUDA."
        ),
    )
    logger: list[Literal["console", "jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["console", "jsonl"],
        description="Metrics sinks; jsonl is always written.",
    )
    save_freq: int = Field(-1, description="Checkpoint every N steps; -1 only at the end.")
    save_limit: int = Field(2, description="Keep the newest N checkpoints; -1 keeps all.")
    resume: str = Field("auto", description="'auto' (latest in output_dir), 'none', or a path.")
    val_freq: int = Field(-1, description="Validate every N steps; -1 disables.")
    val_before_train: bool = Field(False, description="Validate once before the first step.")
    nnodes: int = Field(1, gt=0, description="Nodes (torchrun --nnodes).")
    n_gpus_per_node: int = Field(1, gt=0, description="Processes per node (CPU: processes).")
    collective_timeout_s: float = Field(
        600.0, gt=0, description="A collective that waits longer fails every rank with an error."
    )
