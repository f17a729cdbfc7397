"""`longrl quickstart`: synthetic data -> tiny model -> SFT -> RL -> eval of every stage.

Every stage writes into the run directory and is skipped when its output is
already complete, and training stages resume from their latest checkpoint, so
a killed quickstart continues where it stopped when run again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from longrl.quickstart.plan import QuickstartPlan

logger = logging.getLogger("longrl.quickstart")

STAGES = ("base", "sft", "rl")
# What the quickstart must show on the held-out questions (README): points of accuracy.
SFT_OVER_CHANCE, RL_OVER_SFT = 20, 5
CHANCE_ACCURACY = 0.25  # four options, letters balanced per kind (longrl synth)


def run_quickstart(out: str | Path, plan: QuickstartPlan) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def timed(name, fn, *args):
        begin = time.perf_counter()
        result = fn(*args)
        seconds[name] = round(time.perf_counter() - begin, 1)
        logger.info("stage %s done in %.1f s", name, seconds[name])
        return result

    data = timed("data", make_data, out / "data", plan)
    model = timed("model", make_model, out / "model", plan)
    sft_model = timed("sft", train_sft, out, data, model, plan)
    rl_model = timed("rl", train_rl, out, data, sft_model, plan)
    reports = {}
    for stage, model_dir in zip(STAGES, (model, sft_model, rl_model), strict=True):
        reports[stage] = timed(f"eval_{stage}", evaluate_stage, out, stage, model_dir, data, plan)

    from longrl.quickstart.plots import plot_training

    plots = plot_training(out)
    stages = {stage: _headline(report) for stage, report in reports.items()}
    summary = {
        "plan": asdict(plan),
        "stages": stages,
        "chance_accuracy": CHANCE_ACCURACY,
        "margins": learning_margins(stages, CHANCE_ACCURACY),
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
        "plots": [str(p) for p in plots],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(format_table(summary))
    return summary


def make_data(path: Path, plan: QuickstartPlan) -> Path:
    from longrl.data.synth import SynthConfig, write_dataset

    if (path / "manifest.json").is_file():
        return path
    config = SynthConfig(
        seed=plan.seed,
        num_sft=plan.num_sft,
        num_rl=plan.num_rl,
        num_eval=plan.num_eval,
        min_frames=plan.min_frames,
        max_frames=plan.max_frames,
        difficulty=plan.difficulty,
        kinds=plan.kinds,
        sft_kind_weights=plan.sft_kind_weights,
        reasoning=plan.reasoning,
        sft_reasoning_shares=plan.sft_reasoning_shares,
        sft_answer=plan.sft_answer,
    )
    write_dataset(path, config, workers=2, overwrite=path.exists())
    return path


def make_model(path: Path, plan: QuickstartPlan) -> Path:
    from longrl.models.tiny import build_tiny_checkpoint

    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    return build_tiny_checkpoint(path, kind="qwen2_5_vl", seed=plan.seed, **plan.model_sizes)


def frame_sampling(plan: QuickstartPlan) -> dict[str, Any]:
    """data.* frame sampling and pixel keys, the same for training and every eval."""
    sampling: dict[str, Any] = {
        "fps": plan.fps,
        "max_frames": max(plan.max_sampled_frames, plan.num_sampled_frames or 0),
        "min_frames": 4,
        "max_pixels": plan.frame_pixels,
        "min_pixels": min(28 * 28, plan.frame_pixels),
    }
    if plan.num_sampled_frames is not None:
        sampling["num_frames"] = plan.num_sampled_frames
    return sampling


def _data_overrides(data: Path, split: str, plan: QuickstartPlan) -> dict[str, Any]:
    values = {
        "data.train_files": str(data / f"{split}.jsonl"),
        **{f"data.{key}": value for key, value in frame_sampling(plan).items()},
        "data.max_response_length": plan.max_response_length,
        "data.seed": plan.seed,
    }
    if plan.embedding_cache:
        # One cache for both stages: keys include the ViT weights' fingerprint, so
        # SFT's entries are reused by RL only while the (frozen) tower is unchanged.
        values["data.cache_dir"] = str(data.parent / "embedding_cache")
    return values


def _as_overrides(values: dict[str, Any]) -> list[str]:
    return [f"{key}={value}" for key, value in values.items()]


def train_sft(out: Path, data: Path, model: Path, plan: QuickstartPlan) -> Path:
    from longrl.config import load_config
    from longrl.config.sft import SftConfig
    from longrl.train.sft import run_sft

    exported = out / "sft" / "hf"
    if (exported / "config.json").is_file():
        return exported
    values = {
        **_data_overrides(data, "sft", plan),
        "model.model_path": str(model),
        "optim.lr": plan.sft_lr,
        "optim.lr_warmup_ratio": 0.05,
        "optim.lr_scheduler": "cosine",
        "optim.weight_decay": 0.0,
        "sft.batch_size": plan.sft_batch_size,
        "sft.micro_batch_size": min(plan.sft_batch_size, 16),
        "trainer.output_dir": str(out / "sft"),
        "trainer.max_steps": plan.sft_steps,
        "sft.missing_reasoning": "empty_think" if plan.sft_reasoning_shares else "skip",
        "trainer.save_freq": max(1, plan.sft_steps // 3),
        "trainer.seed": plan.seed,
        "trainer.logger": "[jsonl, console]",
    }
    run_dir = run_sft(load_config(None, _as_overrides(values), schema=SftConfig))
    return _export(run_dir, exported)


def train_rl(out: Path, data: Path, sft_model: Path, plan: QuickstartPlan) -> Path:
    from longrl.config import load_config
    from longrl.train.rl import run_rl

    exported = out / "rl" / "hf"
    if (exported / "config.json").is_file():
        return exported
    values = {
        **_data_overrides(data, "rl", plan),
        "data.rollout_batch_size": plan.rl_prompts_per_step,
        "worker.actor.model.model_path": str(sft_model),
        "worker.actor.global_batch_size": plan.rl_prompts_per_step // plan.rl_minibatches,
        "worker.actor.ppo_epochs": plan.rl_ppo_epochs,
        "worker.actor.micro_batch_size_per_device_for_update": 64,
        "worker.actor.micro_batch_size_per_device_for_experience": 64,
        "worker.actor.optim.lr": plan.rl_lr,
        "worker.actor.optim.weight_decay": 0.0,
        "worker.rollout.n": plan.rl_group_size,
        "worker.rollout.temperature": plan.rl_temperature,
        "algorithm.adv_estimator": "grpo",
        "algorithm.kl_coef": plan.rl_kl_coef,
        "algorithm.disable_kl": str(plan.rl_kl_coef == 0).lower(),
        "algorithm.online_filtering": str(plan.rl_online_filtering).lower(),
        "algorithm.max_filter_tries": plan.rl_max_filter_tries,
        "worker.reward.functions": json.dumps(plan.rl_reward_weights),
        "trainer.output_dir": str(out / "rl"),
        "trainer.max_steps": plan.rl_steps,
        "trainer.save_freq": max(1, plan.rl_steps // 3),
        "trainer.seed": plan.seed,
        "trainer.logger": "[jsonl, console]",
    }
    run_dir = run_rl(load_config(None, _as_overrides(values)))
    return _export(run_dir, exported)


def _export(run_dir: Path, exported: Path) -> Path:
    from longrl.train.export import export_hf

    return export_hf(run_dir, exported)


def evaluate_stage(out: Path, stage: str, model_dir: Path, data: Path, plan: QuickstartPlan):
    from longrl.eval import evaluate

    return evaluate(
        model_dir,
        data / "eval.jsonl",
        out_dir=out / "eval" / stage,
        thinking=True,
        batch_size=plan.eval_batch_size,
        max_new_tokens=plan.max_response_length,
        seed=plan.seed,
        data_overrides=frame_sampling(plan),
        progress=True,
    )


def _headline(report) -> dict[str, Any]:
    metrics = report.metrics
    return {
        "accuracy": metrics["accuracy"],
        "format_accuracy": metrics["format_accuracy"],
        "reasoning_rate": metrics["reasoning_rate"],
        "mean_response_length": metrics["mean_response_length"],
        "num_questions": metrics["num_questions"],
        "per_type_accuracy": {k: v["accuracy"] for k, v in report.per_type.items()},
        "report": str(report.report_path),
    }


def format_table(summary: dict[str, Any]) -> str:
    lines = [
        "| stage | accuracy | format accuracy | reasoning rate | mean response length "
        "| questions |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for stage, row in summary["stages"].items():
        lines.append(
            f"| {stage} | {row['accuracy']:.3f} | {_rate(row['format_accuracy'])} | "
            f"{_rate(row.get('reasoning_rate'))} | "
            f"{row['mean_response_length']:.1f} | {row['num_questions']} |"
        )
    lines.extend(["", *_per_kind_table(summary["stages"]), ""])
    margins = learning_margins(summary["stages"], summary["chance_accuracy"])
    if margins:
        lines.append(
            "margins (accuracy points): "
            + ", ".join(f"{name} {value:+.1f}" for name, value in margins.items())
            + f" (the targets: SFT - chance >= {SFT_OVER_CHANCE}, RL - SFT >= {RL_OVER_SFT})"
        )
    lines.append(
        f"chance accuracy: {summary['chance_accuracy']:.2f}; seconds: {summary['seconds']}"
    )
    return "\n".join(lines) + "\n"


def learning_margins(stages: dict[str, dict[str, Any]], chance: float) -> dict[str, float]:
    """Accuracy gains in points: SFT over chance and RL over SFT (for the stages present)."""
    accuracy = {stage: row["accuracy"] for stage, row in stages.items()}
    margins = {}
    if "sft" in accuracy:
        margins["SFT - chance"] = 100 * (accuracy["sft"] - chance)
        if "rl" in accuracy:
            margins["RL - SFT"] = 100 * (accuracy["rl"] - accuracy["sft"])
    return margins


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _per_kind_table(stages: dict[str, dict[str, Any]]) -> list[str]:
    """Accuracy per question kind (rows) and stage (columns)."""
    kinds = sorted({kind for row in stages.values() for kind in row.get("per_type_accuracy", {})})
    if not kinds:
        return []
    lines = [
        f"| kind | {' | '.join(stages)} |",
        f"| --- |{' --- |' * len(stages)}",
    ]
    for kind in kinds:
        cells = [row.get("per_type_accuracy", {}).get(kind) for row in stages.values()]
        shown = ["-" if value is None else f"{value:.3f}" for value in cells]
        lines.append(f"| {kind} | {' | '.join(shown)} |")
    return lines
