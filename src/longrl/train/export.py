"""Training checkpoint -> an ordinary Hugging Face checkpoint directory.

The result has config.json, model.safetensors, tokenizer and processor files:
transformers (and `longrl eval`, `longrl rl` with worker.actor.model.model_path)
load it like any local checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from longrl.train.checkpoint import COMPLETE, latest_checkpoint


def resolve_training_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir (step_N) or a run dir (its latest checkpoint)."""
    path = Path(path)
    if (path / COMPLETE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"{path}: neither a complete training checkpoint (no {COMPLETE} file) nor a run "
            "directory with checkpoints/"
        )
    return latest


def base_model_path(checkpoint: Path) -> str:
    """The model directory the run started from (from the checkpoint's resolved config)."""
    config = yaml.safe_load((checkpoint / "config.yaml").read_text()) or {}
    path = (config.get("worker", {}).get("actor", {}).get("model", {}) or {}).get("model_path")
    path = path or (config.get("model", {}) or {}).get("model_path")
    if not path:
        raise ValueError(f"{checkpoint}/config.yaml names no model_path to export from")
    return path


def load_trained_model(checkpoint: str | Path):
    """(model, processor, base path) with the checkpoint's weights loaded strictly."""
    from safetensors.torch import load_file

    from longrl.models.load import load_model, load_processor
    from longrl.train.checkpoint import load_model_state

    checkpoint = resolve_training_checkpoint(checkpoint)
    base = base_model_path(checkpoint)
    model = load_model(base)
    weights = checkpoint / "model.safetensors"
    load_model_state(model, load_file(str(weights)), source=weights)
    return model.eval(), load_processor(base), base


def export_hf(checkpoint: str | Path, out_dir: str | Path) -> Path:
    from longrl.models.load import save_checkpoint

    model, processor, _ = load_trained_model(checkpoint)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory")
    # Write next to the target and rename, so a kill never leaves a half export at OUT.
    tmp = out.with_name(f".tmp-{out.name}")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    save_checkpoint(tmp, model, processor)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
