"""The scaled-up tiny Qwen2.5-VL the memory benchmarks share (built once per size)."""

from __future__ import annotations

from pathlib import Path


def tiny_vl_model(out: Path, hidden: int, layers: int) -> Path:
    """A Qwen2.5-VL checkpoint of `hidden` x `layers` under `out`, reused when present."""
    from longrl.models.tiny import build_tiny_checkpoint

    model = out / f"model_h{hidden}_l{layers}"
    if not (model / "config.json").exists():
        build_tiny_checkpoint(
            model,
            kind="qwen2_5_vl",
            hidden_size=hidden,
            num_hidden_layers=layers,
            intermediate_size=hidden * 2,
        )
    return model
