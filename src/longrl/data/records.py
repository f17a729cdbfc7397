"""Read dataset records (.json, .jsonl, .parquet) into `Sample`s.

Two record styles are understood, told apart per record:

- LongVideo-Reason: `problem`, `answer` (e.g. "<answer>B</answer>"), `videos`
  (list or str) or `video` (str), optional `reasoning`, `problem_type`,
  `data_type`, `problem_id`, `options`, ...
- EasyR1: `prompt` (with `<video>` placeholders), `answer`, `videos`.

Every other column is kept in `Sample.extra` (columns whose value is null are
dropped, so a parquet file and the jsonl it came from give the same samples).
Optional `fps` / `num_frames` columns override the frame sampling per record.

`read_records` streams: it yields a `Sample` or a `RecordError` per record and
raises only for problems of the whole file (missing, unsupported extension,
not parseable at all). `longrl.data.dataset.load_dataset` decides what to do
with the bad records.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longrl.data.sample import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Sample

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".parquet")
PROMPT_KEYS = ("problem", "prompt")  # tried in this order when no key is given
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PARQUET_BATCH_ROWS = 1024


class RecordError(ValueError):
    """A record (or a whole file) that cannot become a Sample.

    `reason` is a short stable code used to count skips ("missing_key",
    "bad_type", "placeholder_mismatch", "missing_video", ...); `row` is the
    1-based line (jsonl) or record number (json, parquet), None for file-level
    problems.
    """

    def __init__(self, path: str | Path, row: int | None, unit: str, reason: str, detail: str):
        self.path = str(path)
        self.row = row
        self.reason = reason
        self.detail = detail
        where = self.path if row is None else f"{self.path}, {unit} {row}"
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True)
class _Where:
    """Where a record sits, to name it in errors and default problem ids."""

    path: Path
    row: int
    unit: str  # "line" for jsonl, "record" otherwise

    @property
    def source(self) -> str:
        return f"{self.path.name}:{self.row}"

    def error(self, reason: str, detail: str) -> RecordError:
        return RecordError(self.path, self.row, self.unit, reason, detail)


@dataclass(frozen=True)
class _Keys:
    prompt: str | None  # None: "problem", else "prompt"
    answer: str
    video: str | None  # None: "videos", else "video"


def read_records(
    path: str | Path,
    video_root: str | Path | None = None,
    *,
    check_files: bool = True,
    prompt_key: str | None = None,
    answer_key: str = "answer",
    video_key: str | None = None,
) -> Iterator[Sample | RecordError]:
    """Yield one `Sample` or `RecordError` per record of `path`, in file order.

    Relative media paths are resolved against `video_root` (default: the
    directory of `path`). With `check_files`, a video/image that is not a file
    there is a `RecordError`. `prompt_key`/`video_key` None means: accept either
    style ("problem" or "prompt"; "videos" or "video"). Raises `RecordError` for
    whole-file problems.
    """
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise RecordError(
            path,
            None,
            "",
            "unsupported_format",
            f"unsupported extension {path.suffix!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}",
        )
    if not path.is_file():
        raise RecordError(path, None, "", "missing_file", "no such data file")
    root = Path(video_root) if video_root is not None else path.parent
    if not root.is_dir():
        raise RecordError(
            path, None, "", "missing_video_root", f"video_root {str(root)!r} is not a directory"
        )
    keys = _Keys(prompt_key, answer_key, video_key)
    seen_ids: set[str] = set()
    for where, raw in _raw_records(path):
        if isinstance(raw, RecordError):
            yield raw
            continue
        try:
            sample = _record_to_sample(raw, where, root, keys, check_files=check_files)
        except RecordError as err:
            yield err
            continue
        if sample.problem_id in seen_ids:
            yield where.error(
                "duplicate_id",
                f"problem_id {sample.problem_id!r} was already used by an earlier record; "
                "ids must be unique within a file",
            )
            continue
        seen_ids.add(sample.problem_id)
        yield sample


def _raw_records(path: Path) -> Iterator[tuple[_Where, dict[str, Any] | RecordError]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_records(path)
    elif suffix == ".json":
        yield from _json_records(path)
    else:
        yield from _parquet_records(path)


def _jsonl_records(path: Path) -> Iterator[tuple[_Where, dict[str, Any] | RecordError]]:
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines are not records
            where = _Where(path, line_no, "line")
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield (
                    where,
                    where.error("bad_json", f"not valid JSON ({exc.msg} at column {exc.colno})"),
                )
                continue
            yield where, _as_object(value, where)


def _json_records(path: Path) -> Iterator[tuple[_Where, dict[str, Any] | RecordError]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordError(
            path, None, "", "bad_json", f"not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from exc
    # A list of records, or {"data": [...]} as some exports wrap it.
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise RecordError(
            path,
            None,
            "",
            "bad_layout",
            'a .json data file must hold a list of records (or {"data": [...]}); '
            "use .jsonl for one record per line",
        )
    for index, value in enumerate(document, start=1):
        where = _Where(path, index, "record")
        yield where, _as_object(value, where)


def _parquet_records(path: Path) -> Iterator[tuple[_Where, dict[str, Any] | RecordError]]:
    import pyarrow.parquet as pq

    try:
        table_file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise RecordError(path, None, "", "bad_parquet", f"cannot read parquet: {exc}") from exc
    row = 0
    for batch in table_file.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for value in batch.to_pylist():
            row += 1
            yield _Where(path, row, "record"), value


def _as_object(value: Any, where: _Where) -> dict[str, Any] | RecordError:
    if isinstance(value, dict):
        return value
    return where.error(
        "not_an_object", f"a record must be a JSON object, got {type(value).__name__}"
    )


def _record_to_sample(
    record: dict[str, Any], where: _Where, root: Path, keys: _Keys, *, check_files: bool
) -> Sample:
    """Normalise one record; raises `RecordError` naming the key and the fix."""
    record = {key: value for key, value in record.items() if value is not None}
    prompt_key = _choose_key(record, keys.prompt, PROMPT_KEYS, where, "the question")
    video_key = _choose_key(record, keys.video, ("videos", "video"), where, None)
    image_key = _choose_key(record, None, ("images", "image"), where, None)
    text = _required_text(record, prompt_key, where)
    answer = _answer(record, keys.answer, where)
    videos = _media_paths(record, video_key, root, where, check_files, "video")
    images = _media_paths(record, image_key, root, where, check_files, "image")
    text = _with_placeholders(text, VIDEO_PLACEHOLDER, len(videos), video_key, where)
    text = _with_placeholders(text, IMAGE_PLACEHOLDER, len(images), image_key, where)
    problem_id = record.get("problem_id", where.source)
    if isinstance(problem_id, bool) or not isinstance(problem_id, str | int):
        raise where.error(
            "bad_type", f"'problem_id' must be a string or integer, got {problem_id!r}"
        )
    consumed = {prompt_key, keys.answer, video_key, image_key, "problem_id"}
    consumed |= {"reasoning", "problem_type", "data_type", "fps", "num_frames"}
    return Sample(
        problem_id=str(problem_id),
        prompt=text,
        answer=answer,
        videos=videos,
        images=images,
        reasoning=_optional_text(record, "reasoning", where),
        problem_type=_optional_text(record, "problem_type", where),
        data_type=_optional_text(record, "data_type", where),
        fps=_fps_override(record, where),
        num_frames=_num_frames_override(record, where),
        source=where.source,
        extra={key: value for key, value in record.items() if key not in consumed},
    )


def _choose_key(
    record: dict[str, Any],
    given: str | None,
    candidates: tuple[str, ...],
    where: _Where,
    required_what: str | None,
) -> str:
    """The column to read: `given`, else the one candidate present.

    Returns a candidate even when absent (callers treat a missing media key as
    "no media"); a missing required key is reported here.
    """
    present = [key for key in candidates if key in record]
    if given is not None:
        if given in record:
            return given
        if required_what is not None:
            raise _missing(record, given, where, required_what)
        if present:  # e.g. `video` while told `videos`: never read it as "no video"
            raise where.error(
                "missing_key",
                f"missing key {given!r}, but the record has {present[0]!r}; name that column "
                "(video_key) or leave it unset to accept either",
            )
        return given
    if len(present) > 1:
        raise where.error(
            "ambiguous_key",
            f"record has both {present[0]!r} and {present[1]!r}; keep one, or name the column "
            "to use (prompt_key / video_key)",
        )
    if present:
        return present[0]
    if required_what is not None:
        raise _missing(record, " or ".join(repr(k) for k in candidates), where, required_what)
    return candidates[0]


def _missing(record: dict[str, Any], key: str, where: _Where, what: str) -> RecordError:
    quoted = key if key.startswith("'") else repr(key)
    return where.error(
        "missing_key",
        f"missing key {quoted} ({what}); record has keys {sorted(record)}",
    )


def _required_text(record: dict[str, Any], key: str, where: _Where) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise where.error("bad_type", f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise where.error("empty_value", f"{key!r} is empty")
    return value


def _answer(record: dict[str, Any], key: str, where: _Where) -> str:
    if key not in record:
        raise _missing(record, key, where, 'the ground truth, e.g. "<answer>B</answer>"')
    value = record[key]
    # Numeric ground truths (counting questions) are common; bool is not one.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise where.error(
            "bad_type", f"{key!r} must be a string or a number, got {type(value).__name__}"
        )
    text = str(value)
    tagged = _ANSWER_TAG.findall(text)
    answer = (tagged[-1] if tagged else text).strip()
    if not answer:
        raise where.error("empty_value", f"{key!r} is empty (after removing <answer> tags)")
    return answer


def _optional_text(record: dict[str, Any], key: str, where: _Where) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    raise where.error("bad_type", f"{key!r} must be a string, got {type(value).__name__}")


def _media_paths(
    record: dict[str, Any], key: str, root: Path, where: _Where, check_files: bool, kind: str
) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list | tuple) or not all(isinstance(e, str) for e in entries):
        raise where.error(
            "bad_type", f"{key!r} must be a path or a list of paths, got {value!r:.80}"
        )
    resolved = []
    for entry in entries:
        if not entry.strip():
            raise where.error("empty_value", f"{key!r} holds an empty path")
        full = Path(entry) if Path(entry).is_absolute() else root / entry
        if check_files and not full.is_file():
            raise where.error(
                f"missing_{kind}",
                f"{kind} {entry!r} not found at {str(full)!r}; set video_root to the "
                "directory the record paths are relative to",
            )
        resolved.append(str(full))
    return tuple(resolved)


def _with_placeholders(text: str, placeholder: str, count: int, key: str, where: _Where) -> str:
    """One placeholder per media file: added in front if the text has none."""
    found = text.count(placeholder)
    if found == 0:
        return placeholder * count + text
    if found != count:
        raise where.error(
            "placeholder_mismatch",
            f"the question has {found} {placeholder} placeholder(s) but {key!r} lists {count} "
            f"file(s); give one {placeholder} per file (or none to put them all in front)",
        )
    return text


def _fps_override(record: dict[str, Any], where: _Where) -> float | None:
    value = _number_or_none(record.get("fps"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise where.error("bad_override", f"'fps' must be a positive number, got {value!r}")
    if math.isinf(value):
        raise where.error("bad_override", "'fps' must be finite")
    return float(value)


def _num_frames_override(record: dict[str, Any], where: _Where) -> int | None:
    value = _number_or_none(record.get("num_frames"))
    if value is None:
        return None
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value <= 0:
        raise where.error("bad_override", f"'num_frames' must be a positive integer, got {value!r}")
    return int(value)


def _number_or_none(value: Any) -> Any:
    # pandas writes a missing number in a numeric column as NaN: it means "absent".
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
