"""Atomic training checkpoints: a kill at any moment leaves the latest one whole.

Layout of `<run_dir>/checkpoints/`:
    step_00000012/            one complete checkpoint
        model.safetensors     policy weights
        optimizer.safetensors optimizer tensors; optimizer.json the rest
        trainer_state.json    step, scheduler, data position, python/numpy RNG
        rng.safetensors       torch RNG states
        config.yaml           the resolved run config
        COMPLETE              written last
    latest                    text file naming the newest complete step dir

A checkpoint is written into a hidden temporary directory, every file is
fsynced, the directory is renamed into place (atomic on POSIX), and only then
is `latest` replaced (write + fsync + os.replace). Leftover temporary
directories from a killed save are ignored and removed by the next save.
No pickle anywhere: tensors go to safetensors, everything else to JSON.

Files hold CPU tensors whatever device trained (a GPU run and a CPU run write the same
files); loading copies them into the model's and optimizer's own tensors, on their device.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from longrl.devices import cpu_tensors
from longrl.parallel.fsdp_state import (
    sharded_model_state,
    sharded_optimizer_state,
    tied_duplicate_names,
)

LATEST = "latest"
COMPLETE = "COMPLETE"
_TMP_PREFIX = ".tmp-"


@dataclass
class TrainingState:
    """What a resumed run needs besides weights and optimizer."""

    step: int
    scheduler: dict[str, Any]
    data: dict[str, Any]
    extra: dict[str, Any]


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    model: torch.nn.Module | Callable[[], Mapping[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer | Callable[[], Mapping[str, Any]] | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    data_state: dict[str, Any],
    config_yaml: str,
    extra: dict[str, Any] | None = None,
    keep: int = -1,
) -> Path:
    """`model` and `optimizer` are the objects, or functions returning their full state
    dicts, called in that order just before each is written (a sharded run gathers them
    from every rank's shards, one at a time: see `TrainerParallel.full_weights`)."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    final = root / f"step_{step:08d}"
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    tmp.mkdir()

    weights = model_state(model) if isinstance(model, torch.nn.Module) else model()
    save_file(cpu_tensors(weights), tmp / "model.safetensors")
    del weights  # before the optimizer state is gathered
    if optimizer is not None:
        state = (
            optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer()
        )
        tensors, meta = flatten_optimizer_state(state)
        save_file(cpu_tensors(tensors), tmp / "optimizer.safetensors")
        _write_json(tmp / "optimizer.json", meta)
    save_file(_torch_rng_state(), tmp / "rng.safetensors")
    _write_json(
        tmp / "trainer_state.json",
        {
            "step": step,
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "data": data_state,
            "extra": extra or {},
            "python_rng": _python_rng_state(),
            "numpy_rng": _numpy_rng_state(),
        },
    )
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / COMPLETE).write_text(str(step))
    for path in tmp.iterdir():
        _fsync_file(path)
    _fsync_dir(tmp)

    if final.exists():  # re-saving a step (e.g. after resume) replaces it whole
        _remove_atomically(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _write_text_atomic(root / LATEST, final.name)
    if keep > 0:
        _apply_retention(root, keep, protect=final)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None. Falls back to scanning if `latest` is bad."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / COMPLETE).is_file():
            return candidate
    complete = _complete_checkpoints(root)
    return complete[-1] if complete else None


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    restore_rng: bool = True,
) -> TrainingState:
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise FileNotFoundError(f"{path}: not a complete longrl checkpoint (no {COMPLETE} marker)")
    state = load_file(path / "model.safetensors")
    load_model_state(model, state, source=path / "model.safetensors")
    if optimizer is not None:
        meta = json.loads((path / "optimizer.json").read_text())
        tensors = load_file(path / "optimizer.safetensors")
        full = unflatten_optimizer_state(tensors, meta)
        optimizer.load_state_dict(sharded_optimizer_state(optimizer, full))
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    if scheduler is not None and trainer_state["scheduler"]:
        scheduler.load_state_dict(trainer_state["scheduler"])
    if restore_rng:
        _restore_torch_rng(load_file(path / "rng.safetensors"))
        random.setstate(_as_python_rng_state(trainer_state["python_rng"]))
        np.random.set_state(_as_numpy_rng_state(trainer_state["numpy_rng"]))
    return TrainingState(
        step=trainer_state["step"],
        scheduler=trainer_state["scheduler"],
        data=trainer_state["data"],
        extra=trainer_state["extra"],
    )


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without duplicate storage for tied weights (safetensors refuses aliases)."""
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        if key in seen and tensor.shape == state[seen[key]].shape:
            continue  # tied to an earlier entry; load_model_state re-ties
        seen[key] = name
        state[name] = tensor.detach()
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """Load full tensors; a sharded (FSDP) model keeps this rank's piece of each."""
    missing, unexpected = model.load_state_dict(sharded_model_state(model, state), strict=False)
    tied = set(_tied_parameter_names(model))
    missing = [name for name in missing if name not in tied]
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not fit the model (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); was it saved from another model config?"
        )


def _tied_parameter_names(model: torch.nn.Module) -> list[str]:
    if any(isinstance(p, DTensor) for p in model.parameters()):
        return tied_duplicate_names(model)  # shards: no shared storage to compare
    names = []
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            names.append(name)
        seen.add(key)
    return names


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        scalars = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous()
            else:
                scalars[key] = value
        per_param[str(index)] = scalars
    return tensors, {"param_groups": state["param_groups"], "scalars": per_param}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(s) for i, s in meta["scalars"].items()}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def _complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: p.name)


def _apply_retention(root: Path, keep: int, protect: Path) -> None:
    newest_first = [p for p in reversed(_complete_checkpoints(root)) if p != protect]
    for old in newest_first[keep - 1 :]:
        _remove_atomically(old)


def _remove_atomically(path: Path) -> None:
    """Rename out of sight first, so a kill mid-delete never leaves a half checkpoint."""
    trash = path.with_name(f"{_TMP_PREFIX}trash-{path.name}-{os.getpid()}")
    os.rename(path, trash)
    _fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temporaries(root: Path) -> None:
    for stale in root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _torch_rng_state() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{index}"] = cuda_state
    return states


def _restore_torch_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    if torch.cuda.is_available():
        cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _as_python_rng_state(saved: list) -> tuple:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)


def _numpy_rng_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _as_numpy_rng_state(saved: list) -> tuple:
    name, keys, pos, has_gauss, cached = saved
    return (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True))


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
