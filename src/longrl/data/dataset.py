"""Load a data file into Samples, skipping (and counting) or raising on bad records.

A bad record is never replaced by another one: it is left out, logged on the
"longrl.data" logger with its file, row and reason, and counted in a
`SkipReport`, or it raises (`on_error="raise"`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from longrl.data.records import RecordError, read_records
from longrl.data.sample import Sample

logger = logging.getLogger("longrl.data")

OnError = Literal["skip", "raise"]


@dataclass
class SkipReport:
    """What loading a file kept and what it left out, by reason."""

    path: str
    loaded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    # The first few messages, to show the user without scanning the log.
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def record_skip(self, error: RecordError) -> None:
        self.skipped[error.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.path}: loaded {self.loaded} samples, skipped none"
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.skipped.items()))
        return (
            f"{self.path}: loaded {self.loaded} samples, skipped {self.total_skipped} ({reasons})"
        )


def iter_dataset(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    on_error: OnError = "skip",
    report: SkipReport | None = None,
    check_files: bool = True,
    prompt_key: str | None = None,
    answer_key: str = "answer",
    video_key: str | None = None,
) -> Iterator[Sample]:
    """Stream the good samples of `path`; bad records are skipped into `report` or raise."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    report = report if report is not None else SkipReport(str(path))
    records = read_records(
        path,
        video_root,
        check_files=check_files,
        prompt_key=prompt_key,
        answer_key=answer_key,
        video_key=video_key,
    )
    for item in records:
        if isinstance(item, RecordError):
            if on_error == "raise":
                raise item
            logger.warning("skipping record: %s", item)
            report.record_skip(item)
            continue
        report.loaded += 1
        yield item


def load_dataset(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    on_error: OnError = "skip",
    check_files: bool = True,
    prompt_key: str | None = None,
    answer_key: str = "answer",
    video_key: str | None = None,
) -> tuple[list[Sample], SkipReport]:
    """All good samples of `path` (file order) and the report of what was skipped."""
    report = SkipReport(str(path))
    samples = list(
        iter_dataset(
            path,
            video_root,
            on_error=on_error,
            report=report,
            check_files=check_files,
            prompt_key=prompt_key,
            answer_key=answer_key,
            video_key=video_key,
        )
    )
    log = logger.warning if report.total_skipped else logger.info
    log("%s", report.summary())
    return samples, report
