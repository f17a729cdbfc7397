"""`longrl cache`: fills the cache training then hits, resumes after an interruption,
reports failures with reasons, splits the videos across ranks."""

from __future__ import annotations

import json

import pytest

from longrl.cli import main
from longrl.config import load_config
from longrl.train.metrics import read_metrics
from longrl.train.rl import run_rl
from tests.e2e.conftest import rl_overrides


def _cache_args(model, data_file, cache_dir, *extra, **more_settings):
    settings = {
        "worker.actor.model.model_path": model,
        "data.train_files": data_file,
        "data.fps": 2,
        "data.max_frames": 16,
        "data.cache_dir": cache_dir,
        **more_settings,
    }
    pairs = [f"{k}={v}" for k, v in settings.items()]
    return ["cache", *pairs, "--no-progress", *(str(e) for e in extra)]


def _entries(cache_dir):
    return sorted(cache_dir.glob("v1/*/*/*.safetensors"))


def _records(synth_data, out, count):
    """The first `count` RL records, with absolute video paths."""
    lines = (synth_data / "rl.jsonl").read_text().splitlines()[:count]
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["videos"] = [str(synth_data / v) for v in row["videos"]]
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def test_cache_resumes_after_an_interruption_and_training_then_hits(
    tiny_vl_checkpoint, synth_data, tmp_path, monkeypatch, capsys
):
    import longrl.vision.precompute as precompute

    records = _records(synth_data, tmp_path / "records.jsonl", 5)
    cache_dir, report = tmp_path / "cache", tmp_path / "summary.json"
    args = _cache_args(tiny_vl_checkpoint, records, cache_dir, "--json", report)
    real, calls = precompute._encode_one, []

    def interrupted(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed after two videos
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(precompute, "_encode_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert len(_entries(cache_dir)) == 2
    monkeypatch.undo()

    assert main(args) == 0
    summary = json.loads(report.read_text())
    assert {k: summary[k] for k in ("videos", "encoded", "cached", "failed")} == {
        "videos": 5,
        "encoded": 3,
        "cached": 2,
        "failed": 0,
    }
    entries = _entries(cache_dir)
    assert len(entries) == 5
    assert summary["bytes"] == sum(p.stat().st_size for p in entries)
    assert summary["tokens"] > 0
    printed = capsys.readouterr().out
    assert "videos   5: encoded 3, already cached 2, failed 0" in printed

    assert main([*args, "--verify"]) == 0
    assert json.loads(report.read_text())["cached"] == 5

    # An RL step with the same settings finds every video (no vision-tower call at all)
    # and gives the metrics of an uncached step exactly.
    def rl_step(name, **extra):
        settings = {"trainer.max_steps": 1, "data.train_files": records, **extra}
        overrides = rl_overrides(tiny_vl_checkpoint, synth_data, tmp_path / name, **settings)
        (row,) = read_metrics(run_rl(load_config(None, overrides)) / "metrics.jsonl")
        return row

    warm, plain = rl_step("warm", **{"data.cache_dir": str(cache_dir)}), rl_step("plain")
    assert (warm["vision/encode_calls"], plain["vision/encode_calls"]) == (0, 1)
    assert warm["vision/cache_misses"] == 0 and warm["vision/cache_hits_disk"] > 0
    assert not any(k.startswith("vision/cache_") for k in plain)  # uncached: no cache metrics
    volatile = ("time/", "throughput/", "vision/")
    assert {k: v for k, v in warm.items() if not k.startswith(volatile)} == {
        k: v for k, v in plain.items() if not k.startswith(volatile)
    }


def test_failures_are_reported_with_their_reason(tiny_vl_checkpoint, synth_data, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    good = json.loads(_records(synth_data, tmp_path / "one.jsonl", 1).read_text())
    bad = {**good, "problem_id": "bad", "videos": [str(broken)]}
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    report = tmp_path / "summary.json"
    args = _cache_args(tiny_vl_checkpoint, records, tmp_path / "cache", "--json", report)
    assert main(args) == 0  # data.on_bad_sample=skip: reported, not fatal
    summary = json.loads(report.read_text())
    assert (summary["videos"], summary["encoded"], summary["failed"]) == (2, 1, 1)
    (failure,) = summary["failures"]
    assert failure["video"] == str(broken) and failure["reason"].startswith("VideoError")
    assert f"{broken}: VideoError" in capsys.readouterr().out
    strict = {"data.on_bad_sample": "raise"}
    assert main(_cache_args(tiny_vl_checkpoint, records, tmp_path / "c2", **strict)) == 1


def test_cache_refuses_a_missing_cache_dir_or_a_trainable_tower(tmp_path, capsys):
    assert main(["cache", "data.train_files=x.jsonl"]) == 2
    assert "data.cache_dir is not set" in capsys.readouterr().err
    frozen_off = "worker.actor.model.freeze_vision_tower=false"
    assert main(["cache", f"data.cache_dir={tmp_path}", frozen_off]) == 2
    assert "needs a frozen vision tower" in capsys.readouterr().err


def _cache_on_rank(args):
    assert main(args) == 0


@pytest.mark.dist
@pytest.mark.slow
def test_cache_splits_the_videos_across_ranks(tiny_vl_checkpoint, synth_data, tmp_path):
    from tests.dist.dist_launch import run_workers

    cache_dir, report = tmp_path / "cache", tmp_path / "summary.json"
    records = _records(synth_data, tmp_path / "records.jsonl", 6)
    args = _cache_args(tiny_vl_checkpoint, records, cache_dir, "--json", report)
    run_workers(_cache_on_rank, 2, args, timeout=120)
    summary = json.loads(report.read_text())
    assert (summary["videos"], summary["encoded"], summary["cached"]) == (6, 6, 0)
    assert len(_entries(cache_dir)) == 6
