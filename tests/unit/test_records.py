"""Dataset record readers: every format, both record styles, every kind of bad record."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longrl.data.dataset import iter_dataset, load_dataset
from longrl.data.records import RecordError, read_records
from longrl.data.sample import Sample


def write_records(path: Path, records: list[dict]) -> Path:
    """Write `records` in the format named by the extension of `path`."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".json":
        path.write_text(json.dumps(records))
    else:  # one column per key of any record, null where a record lacks it
        keys = list(dict.fromkeys(k for r in records for k in r))
        pq.write_table(pa.table({k: [r.get(k) for r in records] for k in keys}), path)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "videos").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "videos" / name).write_bytes(b"")  # the reader only checks existence
    return tmp_path


LVR_RECORDS = [
    {
        "problem_id": "q-1",
        "problem": "What happens first?\nA. x\nB. y",
        "answer": "<answer>B</answer>",
        "videos": ["videos/a.mp4"],
        "reasoning": "First y. Therefore B.",
        "problem_type": "order",
        "data_type": "video",
        "options": ["A. x", "B. y"],
        "duration": 12.5,
    },
    {
        "problem": "How many cups?",
        "answer": " <answer> 3 </answer>",
        "video": "videos/b.mp4",
        "duration": 3.0,
    },
]


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".parquet"])
def test_longvideo_reason_records_round_trip_in_every_format(data_dir: Path, ext: str) -> None:
    path = write_records(data_dir / f"data{ext}", LVR_RECORDS)
    samples, report = load_dataset(path)
    assert report.loaded == 2 and report.total_skipped == 0
    assert samples == [
        Sample(
            problem_id="q-1",
            prompt="<video>What happens first?\nA. x\nB. y",
            answer="B",
            videos=(str(data_dir / "videos" / "a.mp4"),),
            reasoning="First y. Therefore B.",
            problem_type="order",
            data_type="video",
            source=f"data{ext}:1",
            extra={"options": ["A. x", "B. y"], "duration": 12.5},
        ),
        Sample(
            problem_id=f"data{ext}:2",
            prompt="<video>How many cups?",
            answer="3",
            videos=(str(data_dir / "videos" / "b.mp4"),),
            source=f"data{ext}:2",
            extra={"duration": 3.0},
        ),
    ]


def test_easyr1_prompt_keeps_its_placeholders_and_numeric_answer(data_dir: Path) -> None:
    record = {
        "prompt": "Compare <video> with <video>: which is longer?",
        "answer": 2,
        "videos": ["videos/a.mp4", "videos/c.mp4"],
    }
    (sample,) = load_dataset(write_records(data_dir / "e.jsonl", [record]))[0]
    assert sample.prompt == record["prompt"]
    assert sample.answer == "2"
    assert [Path(v).name for v in sample.videos] == ["a.mp4", "c.mp4"]
    assert sample.extra == {}


def test_json_file_may_wrap_records_in_data(data_dir: Path) -> None:
    path = data_dir / "wrapped.json"
    path.write_text(json.dumps({"data": LVR_RECORDS}))
    samples, _ = load_dataset(path)
    assert [s.problem_id for s in samples] == ["q-1", "wrapped.json:2"]


def test_video_root_resolves_relative_paths_and_keeps_absolute_ones(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("records")
    absolute = str(data_dir / "videos" / "c.mp4")
    records = [
        {"problem": "q", "answer": "A", "videos": ["a.mp4"]},
        {"problem": "q", "answer": "A", "videos": [absolute]},
    ]
    path = write_records(elsewhere / "d.jsonl", records)
    samples, report = load_dataset(path, video_root=data_dir / "videos")
    assert report.total_skipped == 0
    assert samples[0].videos == (str(data_dir / "videos" / "a.mp4"),)
    assert samples[1].videos == (absolute,)
    # Without video_root, relative paths are taken from the data file's directory.
    _, report = load_dataset(path)
    assert report.skipped == {"missing_video": 1}


def test_per_record_fps_and_num_frames_overrides(data_dir: Path) -> None:
    records = [
        {"problem": "q", "answer": "A", "videos": ["videos/a.mp4"], "fps": 2.5, "num_frames": 32},
        {"problem": "q", "answer": "A", "videos": ["videos/a.mp4"], "fps": 1, "num_frames": 8.0},
        {"problem": "q", "answer": "A", "videos": ["videos/a.mp4"]},
    ]
    samples, _ = load_dataset(write_records(data_dir / "o.parquet", records))
    assert [(s.fps, s.num_frames) for s in samples] == [(2.5, 32), (1.0, 8), (None, None)]
    assert all("fps" not in s.extra and "num_frames" not in s.extra for s in samples)
    # pandas writes a missing number as NaN: that means "no override".
    table = pa.table({"problem": ["q"], "answer": ["A"], "fps": [float("nan")]})
    pq.write_table(table, data_dir / "nan.parquet")
    (sample,) = load_dataset(data_dir / "nan.parquet")[0]
    assert sample.fps is None


GOOD = {"problem_id": "good", "problem": "q", "answer": "A", "videos": ["videos/a.mp4"]}
BAD_RECORDS = [
    # (jsonl line text, reason, words the message must contain)
    (json.dumps({"answer": "A"}), "missing_key", "'problem' or 'prompt'"),
    (json.dumps({"problem": "q"}), "missing_key", "'answer'"),
    (json.dumps({"problem": 7, "answer": "A"}), "bad_type", "'problem' must be a string"),
    (json.dumps({"problem": "q", "answer": "<answer> </answer>"}), "empty_value", "'answer'"),
    (json.dumps({"problem": "q", "answer": "A", "videos": {"a": 1}}), "bad_type", "'videos'"),
    (
        json.dumps({"problem": "<video> vs <video>", "answer": "A", "videos": ["videos/a.mp4"]}),
        "placeholder_mismatch",
        "2 <video> placeholder(s) but 'videos' lists 1",
    ),
    (
        json.dumps({"problem": "q", "answer": "A", "videos": ["videos/nope.mp4"]}),
        "missing_video",
        "video 'videos/nope.mp4' not found",
    ),
    ('{"problem": "q", "answer": ', "bad_json", "not valid JSON"),
    ("[1, 2]", "not_an_object", "must be a JSON object"),
    (json.dumps({**GOOD, "problem": "again"}), "duplicate_id", "'good' was already used"),
    (json.dumps({"problem": "q", "prompt": "q", "answer": "A"}), "ambiguous_key", "prompt_key"),
    (json.dumps({"problem": "q", "answer": "A", "fps": -1}), "bad_override", "'fps'"),
    (json.dumps({"problem": "q", "answer": "A", "num_frames": 2.5}), "bad_override", "num_frames"),
]


@pytest.mark.parametrize(("line", "reason", "words"), BAD_RECORDS)
def test_bad_record_is_named_skipped_and_counted_or_raises(
    data_dir: Path, caplog: pytest.LogCaptureFixture, line: str, reason: str, words: str
) -> None:
    # Good record, a blank line (not a record, but it still counts as a line), the bad one.
    path = data_dir / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    items = list(read_records(path))
    error = items[1]
    assert isinstance(items[0], Sample) and isinstance(error, RecordError)
    assert error.reason == reason and error.row == 3
    assert str(error).startswith(f"{path}, line 3: ")
    assert words in str(error)

    with caplog.at_level(logging.WARNING, logger="longrl.data"):
        samples, report = load_dataset(path)
    assert [s.problem_id for s in samples] == ["good"]
    assert report.loaded == 1 and dict(report.skipped) == {reason: 1}
    assert any("line 3" in r.getMessage() and r.name == "longrl.data" for r in caplog.records)
    assert reason in report.summary()

    with pytest.raises(RecordError, match="line 3"):
        load_dataset(path, on_error="raise")


@pytest.mark.parametrize("ext", [".json", ".parquet"])
def test_bad_rows_of_json_and_parquet_are_numbered_by_record(data_dir: Path, ext: str) -> None:
    records = [GOOD, {"problem": "q", "answer": "A", "videos": ["videos/missing.mp4"]}]
    path = write_records(data_dir / f"rows{ext}", records)
    samples, report = load_dataset(path)
    assert len(samples) == 1 and report.skipped == {"missing_video": 1}
    with pytest.raises(RecordError, match=rf"rows\{ext}, record 2: video"):
        load_dataset(path, on_error="raise")


def test_explicit_keys_are_strict(data_dir: Path) -> None:
    record = {"prompt": "q", "answer": "A", "video": "videos/a.mp4"}
    path = write_records(data_dir / "k.jsonl", [record])
    with pytest.raises(RecordError, match="missing key 'problem'"):
        load_dataset(path, prompt_key="problem", on_error="raise")
    # A `video` column is never read as "no video" when told to use `videos`.
    with pytest.raises(RecordError, match="record has 'video'"):
        load_dataset(path, video_key="videos", on_error="raise")
    (sample,) = load_dataset(path, prompt_key="prompt", video_key="video")[0]
    assert sample.prompt == "<video>q"


def test_check_files_false_accepts_paths_that_do_not_exist(data_dir: Path) -> None:
    record = {"problem": "q", "answer": "A", "videos": ["videos/later.mp4"]}
    path = write_records(data_dir / "late.jsonl", [record])
    (sample,) = load_dataset(path, check_files=False)[0]
    assert sample.videos == (str(data_dir / "videos" / "later.mp4"),)


def test_whole_file_problems_raise_even_when_skipping(data_dir: Path) -> None:
    (data_dir / "data.csv").write_text("problem,answer\n")
    with pytest.raises(RecordError, match=r"unsupported extension '\.csv'"):
        load_dataset(data_dir / "data.csv")
    with pytest.raises(RecordError, match="no such data file"):
        load_dataset(data_dir / "absent.jsonl")
    (data_dir / "broken.json").write_text("[{")
    with pytest.raises(RecordError, match="not valid JSON"):
        load_dataset(data_dir / "broken.json")
    (data_dir / "object.json").write_text('{"problem": "q"}')
    with pytest.raises(RecordError, match="must hold a list of records"):
        load_dataset(data_dir / "object.json")
    write_records(data_dir / "ok.jsonl", [GOOD])
    with pytest.raises(RecordError, match="is not a directory"):
        load_dataset(data_dir / "ok.jsonl", video_root=data_dir / "no-such-dir")
    with pytest.raises(ValueError, match="on_error"):
        load_dataset(data_dir / "ok.jsonl", on_error="ignore")  # type: ignore[arg-type]


def test_iter_dataset_streams_before_reaching_a_bad_line(data_dir: Path) -> None:
    path = data_dir / "stream.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + "not json\n")
    stream = iter_dataset(path, on_error="raise")
    assert next(stream).problem_id == "good"  # yielded before the bad line is read
    with pytest.raises(RecordError, match="line 2"):
        next(stream)
