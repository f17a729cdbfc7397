"""PNG plots of the training curves, read back from the runs' metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from longrl.train.metrics import METRICS_FILE, read_metrics

# (run, metric, title) per panel.
PANELS = (
    ("sft", "loss", "SFT loss"),
    ("sft", "token_accuracy", "SFT token accuracy"),
    ("rl", "reward/mean", "RL reward (mean)"),
    ("rl", "accuracy", "RL accuracy (rollouts)"),
    ("rl", "response_length/mean", "RL response length (tokens)"),
)
# Steps per point of the moving average drawn over the raw (noisy) per-step values.
SMOOTHING_WINDOW = 20


def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each value and the up to `window - 1` values before it."""
    averages, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        averages.append(total / min(i + 1, window))
    return averages


def plot_training(out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in ("sft", "rl"):
        path = out / run / METRICS_FILE
        if not path.is_file():
            continue
        rows = read_metrics(path)
        panels = [(m, t) for r, m, t in PANELS if r == run and any(m in row for row in rows)]
        if not panels:
            continue
        figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
        for axis, (metric, title) in zip(axes[0], panels, strict=True):
            points = [(row["step"], row[metric]) for row in rows if row.get(metric) is not None]
            steps, values = [s for s, _ in points], [v for _, v in points]
            axis.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
            if len(values) > SMOOTHING_WINDOW:
                smooth = moving_average(values, SMOOTHING_WINDOW)
                axis.plot(steps, smooth, color="tab:blue", linewidth=2, label="moving average")
                axis.legend(loc="best", fontsize=8)
            axis.set_title(title)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
        figure.tight_layout()
        target = plots_dir / f"{run}.png"
        figure.savefig(target, dpi=100)
        plt.close(figure)
        written.append(target)
    return written
