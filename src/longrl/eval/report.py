"""The evaluation report: what `evaluate` returns, report.json, and the printed table.

report.json:
    {"metrics": {...summary.summarize...},
     "per_type": {problem_type: {...same keys...}},
     "skipped": {"total": int, "reasons": {reason: count}, "examples": [message, ...]},
     "settings": {model, data_file, k, n, temperature, thinking, data, ...},
     "seconds": float, "predictions": "predictions.jsonl"}
predictions.jsonl: one QuestionResult.as_row() per line (QUESTION_KEYS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from longrl.eval.scoring import QuestionResult

REPORT_FILE = "report.json"
PREDICTIONS_FILE = "predictions.jsonl"
QUESTION_KEYS = (
    "problem_id",
    "problem_type",
    "question",
    "answer",
    "responses",
    "extracted",
    "correct",
    "num_correct",
    "format_ok",
    "response_length",
    "finished",
)


@dataclass
class EvalReport:
    metrics: dict[str, Any]
    per_type: dict[str, dict[str, Any]]
    skipped: dict[str, int]  # reason -> count
    skipped_examples: list[str]
    settings: dict[str, Any]
    seconds: float
    results: list[QuestionResult] = field(repr=False, default_factory=list)
    out_dir: Path | None = None

    @property
    def report_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / REPORT_FILE

    @property
    def predictions_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / PREDICTIONS_FILE

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "per_type": self.per_type,
            "skipped": {
                "total": sum(self.skipped.values()),
                "reasons": dict(sorted(self.skipped.items())),
                "examples": self.skipped_examples,
            },
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "predictions": PREDICTIONS_FILE,
        }

    def write_report(self) -> None:
        if self.report_path is not None:
            self.report_path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def write_prediction(handle: TextIO, result: QuestionResult) -> None:
    row = result.as_row()
    handle.write(json.dumps({key: row[key] for key in QUESTION_KEYS}, ensure_ascii=False) + "\n")
    handle.flush()  # a long eval that dies keeps the questions already scored


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


def format_table(report: EvalReport) -> str:
    """The short summary `longrl eval` prints."""
    m, k = report.metrics, report.settings["k"]
    model = report.settings["model"]
    where = model["given"]
    if model["kind"] == "training_checkpoint":
        where = f"{model['checkpoint']} (step {model['step']}, base {model['model_dir']})"
    correct = sum(r.num_correct for r in report.results)
    lines = [
        f"model              {where}",
        f"data               {report.settings['data_file']}: {m['num_questions']} questions, "
        f"{sum(report.skipped.values())} skipped"
        + (f" {dict(sorted(report.skipped.items()))}" if report.skipped else ""),
        f"responses          {report.settings['n']} per question, "
        + (
            "greedy"
            if report.settings["temperature"] == 0
            else f"T={report.settings['temperature']}"
        ),
        f"accuracy           {_percent(m['accuracy'])}  ({correct}/{m['num_responses']})",
    ]
    if k > 1:
        lines.append(f"pass@{k:<13} {_percent(m[f'pass_at_{k}'])}")
    lines += [
        "format accuracy    "
        + (
            _percent(m["format_accuracy"])
            if report.settings.get("thinking", True)
            else "- (answer-only prompt: not checked)"
        ),
        "reasoning          "
        + (
            _percent(m["reasoning_rate"]) + "  (think block not empty)"
            if m.get("reasoning_rate") is not None
            else "-"
        ),
        f"no answer found    {_percent(m['extraction_failure_rate'])}",
        f"mean length        {m['mean_response_length']:.1f} tokens"
        f" ({_percent(m['truncated_rate']).strip()} cut at max tokens)",
        "per type           questions  accuracy" + (f"  pass@{k}" if k > 1 else ""),
    ]
    for name, t in report.per_type.items():
        row = f"  {name:<16} {t['num_questions']:>9}    {_percent(t['accuracy'])}"
        if k > 1:
            row += f"  {_percent(t[f'pass_at_{k}'])}"
        lines.append(row)
    if report.out_dir is not None:
        lines += [
            f"report             {report.report_path}",
            f"predictions        {report.predictions_path}",
        ]
    lines.append(f"time               {report.seconds:.1f}s")
    return "\n".join(lines)
