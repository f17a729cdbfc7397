"""What `longrl eval MODEL` can point at, and loading the policy from it.

MODEL is one of:
- a Hugging Face model directory (config.json + safetensors + tokenizer), e.g.
  one written by `longrl tiny-model DIR` or `longrl export`;
- a training checkpoint `run/checkpoints/step_N/` (model.safetensors +
  config.yaml): the base model named by config.yaml's
  worker.actor.model.model_path is loaded, then the checkpoint's weights are
  loaded into it strictly (a mismatch is an error, never a partial load);
- a run directory (`trainer.output_dir`): its latest complete checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longrl.config.data import DataConfig
from longrl.config.root import RunConfig
from longrl.eval.errors import EvalError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSource:
    given: Path  # what the user named
    model_dir: Path  # the Hugging Face directory loaded first
    checkpoint: Path | None = None  # training checkpoint whose weights replace model_dir's
    run_config: RunConfig | None = None  # the checkpoint's resolved run config
    step: int | None = None

    @property
    def kind(self) -> str:
        if self.checkpoint is None:
            return "hf_model"
        return "training_checkpoint"

    def describe(self) -> dict[str, Any]:
        return {
            "given": str(self.given),
            "kind": self.kind,
            "model_dir": str(self.model_dir),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "step": self.step,
        }


def resolve_model_source(path: str | Path) -> ModelSource:
    """Classify `path` (HF dir, training checkpoint, run dir); raises EvalError if none fits."""
    from longrl.train.checkpoint import COMPLETE, checkpoint_root, latest_checkpoint

    given = Path(path)
    if not given.exists():
        raise EvalError(f"{given}: model path not found")
    if not given.is_dir():
        raise EvalError(f"{given}: expected a directory (model, checkpoint or run dir)")
    if (given / "config.json").is_file():
        return ModelSource(given=given, model_dir=given)
    if (given / "model.safetensors").is_file() and (given / "config.yaml").is_file():
        if not (given / COMPLETE).is_file():
            raise EvalError(
                f"{given}: incomplete training checkpoint (no {COMPLETE} marker; the save was "
                "interrupted); evaluate an earlier step"
            )
        return _training_checkpoint(given, given)
    if checkpoint_root(given).is_dir():
        latest = latest_checkpoint(given)
        if latest is None:
            raise EvalError(f"{checkpoint_root(given)}: no complete checkpoint in this run yet")
        return _training_checkpoint(given, latest)
    raise EvalError(
        f"{given}: neither a Hugging Face model directory (config.json), a training checkpoint "
        "(model.safetensors + config.yaml) nor a run directory (checkpoints/)"
    )


def _training_checkpoint(given: Path, checkpoint: Path) -> ModelSource:
    from longrl.config import ConfigError, load_config

    try:
        config = load_config(checkpoint / "config.yaml")
    except ConfigError as err:
        raise EvalError(f"{checkpoint / 'config.yaml'}: not a usable run config: {err}") from None
    base = config.worker.actor.model.model_path
    if not base:
        raise EvalError(
            f"{checkpoint / 'config.yaml'}: worker.actor.model.model_path is not set, so the "
            "base model of this checkpoint is unknown"
        )
    if not Path(base, "config.json").is_file():
        raise EvalError(
            f"{checkpoint}: its base model {base!r} (worker.actor.model.model_path in "
            "config.yaml) is not a model directory here; restore it at that path"
        )
    return ModelSource(
        given=given,
        model_dir=Path(base),
        checkpoint=checkpoint,
        run_config=config,
        step=_checkpoint_step(checkpoint),
    )


def _checkpoint_step(checkpoint: Path) -> int | None:
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return None
    return int(json.loads(state.read_text())["step"])


def base_data_config(source: ModelSource) -> DataConfig:
    """Frame sampling and preprocessing the model was trained with (defaults for a plain model).

    Eval skips bad samples (counted in the report) unless told otherwise.
    """
    if source.run_config is None:
        return DataConfig()
    inherited = source.run_config.data.model_dump()
    inherited.update(train_files=None, val_files=None, on_bad_sample="skip")
    return DataConfig.model_validate(inherited)


def load_eval_policy(source: ModelSource, data: DataConfig, device: torch.device | str = "cpu"):
    """The policy on `device`, in eval mode without gradients, with the checkpoint's weights
    if any (read on the CPU, copied into the parameters where they are)."""
    from safetensors.torch import load_file

    from longrl.config.worker import ModelConfig
    from longrl.train.checkpoint import load_model_state
    from longrl.train.policy import load_policy

    model_cfg = ModelConfig(model_path=str(source.model_dir))
    if source.run_config is not None:
        trained = source.run_config.worker.actor.model
        model_cfg = ModelConfig(model_path=str(source.model_dir), dtype=trained.dtype)
    policy = load_policy(model_cfg, data, device=device)
    if source.checkpoint is not None:
        weights = source.checkpoint / "model.safetensors"
        try:
            load_model_state(policy.model, load_file(str(weights)), source=weights)
        except ValueError as err:
            raise EvalError(str(err)) from None
    policy.model.requires_grad_(False)
    policy.model.eval()
    return policy
