"""The scaled-up tiny Qwen2.5-VL the memory benchmarks share (built once per size)."""

from __future__ import annotations

from pathlib import Path


def tiny_vl_model(
    out: Path,
    hidden: int,
    layers: int,
    vision_depth: int | None = None,
    vision_width: int | None = None,
) -> Path:
    """A Qwen2.5-VL checkpoint of `hidden` x `layers` under `out`, reused when present;
    the vision tower keeps the tiny kit's size unless `vision_depth`/`vision_width` say."""
    from longrl.models.tiny import build_tiny_checkpoint

    vision = {}
    name = f"model_h{hidden}_l{layers}"
    if vision_depth is not None and vision_width is not None:
        name += f"_vd{vision_depth}_vw{vision_width}"
        vision = {
            "vision_depth": vision_depth,
            "vision_hidden_size": vision_width,
            "vision_num_heads": max(2, vision_width // 32),
            "vision_intermediate_size": vision_width * 2,
        }
    model = out / name
    if not (model / "config.json").exists():
        build_tiny_checkpoint(
            model,
            kind="qwen2_5_vl",
            hidden_size=hidden,
            num_hidden_layers=layers,
            intermediate_size=hidden * 2,
            **vision,
        )
    return model
