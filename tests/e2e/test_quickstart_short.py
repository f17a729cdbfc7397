"""The README's main job, shortened: every stage runs and its outputs are well-formed.

The learning margins are checked by the full `make quickstart` (see README)."""

import json

import pytest

from longrl.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_short_quickstart_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "qs"
    # --set applies after --short: the shortened plan runs 2 RL steps, this run 3.
    assert main(["quickstart", "--short", "--out", str(out), "--set", "rl_steps=3"]) == 0
    printed = capsys.readouterr().out
    assert "| base |" in printed and "| sft |" in printed and "| rl |" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert summary["plan"]["rl_steps"] == 3
    assert set(summary["stages"]) == {"base", "sft", "rl"}
    accuracy = {stage: row["accuracy"] for stage, row in summary["stages"].items()}
    assert summary["margins"]["RL - SFT"] == pytest.approx(100 * (accuracy["rl"] - accuracy["sft"]))
    for stage, row in summary["stages"].items():
        report = json.loads((out / "eval" / stage / "report.json").read_text())
        assert report["metrics"]["num_questions"] == row["num_questions"] == 8
        assert 0.0 <= row["accuracy"] <= 1.0
        predictions = (out / "eval" / stage / "predictions.jsonl").read_text().splitlines()
        assert len(predictions) == 8
        correct = [json.loads(line)["correct"] for line in predictions]
        flat = [c for row_correct in correct for c in row_correct]
        assert row["accuracy"] == pytest.approx(sum(flat) / len(flat))
    for run in ("sft", "rl"):
        assert (out / run / "hf" / "config.json").is_file()
        rows = [json.loads(line) for line in (out / run / "metrics.jsonl").read_text().splitlines()]
        assert rows and rows[-1]["step"] == summary["plan"][f"{run}_steps"]
        png = out / "plots" / f"{run}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert (out / "summary.md").read_text().startswith("| stage |")
    # The default SFT split mixes annotated and bare records; SFT learns both
    # (sft.missing_reasoning=empty_think), none is left out.
    sft_split = json.loads((out / "data" / "manifest.json").read_text())["splits"]["sft"]
    assert 0 < sft_split["records"] - sft_split["with_reasoning"] < sft_split["records"]
    sft_rows = [
        json.loads(line) for line in (out / "sft" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sft_rows[-1]["data/skipped_total"] == 0

    # Run again: finished stages are reused (no retraining), the table is rebuilt.
    before = (out / "sft" / "hf" / "model.safetensors").stat().st_mtime_ns
    assert main(["quickstart", "--short", "--out", str(out)]) == 0
    assert (out / "sft" / "hf" / "model.safetensors").stat().st_mtime_ns == before
