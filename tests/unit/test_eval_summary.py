"""Eval aggregation: metrics of hand-built results, computed by hand."""

import json

import pytest

from longrl.eval.report import QUESTION_KEYS, EvalReport, format_table, write_prediction
from longrl.eval.scoring import QuestionResult, has_reasoning
from longrl.eval.summary import UNSPECIFIED_TYPE, summarize, summarize_by_type


def _result(pid, kind, correct, extracted, format_ok, lengths, finished=None):
    n = len(correct)
    return QuestionResult(
        problem_id=pid,
        problem_type=kind,
        question="?",
        answer="A",
        responses=["r"] * n,
        extracted=extracted,
        correct=correct,
        format_ok=format_ok,
        response_length=lengths,
        finished=finished or [True] * n,
    )


RESULTS = [
    # 2 of 4 correct: pass@2 = 1 - C(2,2)/C(4,2) = 5/6
    _result("a", "count", [True, False, True, False], ["A", "B", "A", None],
            [True, True, False, False], [10, 20, 30, 40], [True, True, True, False]),
    # 0 of 4 correct: pass@2 = 0
    _result("b", "count", [False] * 4, [None, None, "C", "D"], [False] * 4, [5, 5, 5, 5]),
    # 1 of 4 correct: pass@2 = 1 - C(3,2)/C(4,2) = 1/2
    _result("c", None, [False, False, False, True], ["B", "B", "B", "A"],
            [True, True, True, True], [8, 8, 8, 8]),
]  # fmt: skip


def test_summary_numbers_by_hand():
    m = summarize(RESULTS, k=2)
    assert m["num_questions"] == 3 and m["num_responses"] == 12
    assert m["accuracy"] == pytest.approx(3 / 12)
    assert m["pass_at_1"] == pytest.approx((2 / 4 + 0 + 1 / 4) / 3)
    assert m["pass_at_2"] == pytest.approx((5 / 6 + 0 + 1 / 2) / 3)
    assert m["format_accuracy"] == pytest.approx(6 / 12)
    assert m["reasoning_rate"] == 0.0  # every response is "r": no think block
    assert m["extraction_failure_rate"] == pytest.approx(3 / 12)
    assert m["mean_response_length"] == pytest.approx((100 + 20 + 32) / 12)
    assert m["truncated_rate"] == pytest.approx(1 / 12)


def test_per_type_splits_and_counts_sum_to_total():
    per_type = summarize_by_type(RESULTS, k=2)
    assert list(per_type) == ["count", UNSPECIFIED_TYPE]
    assert per_type["count"]["num_questions"] == 2
    assert per_type["count"]["accuracy"] == pytest.approx(2 / 8)
    assert per_type["count"]["pass_at_2"] == pytest.approx((5 / 6 + 0) / 2)
    assert per_type[UNSPECIFIED_TYPE]["accuracy"] == pytest.approx(1 / 4)
    assert sum(t["num_questions"] for t in per_type.values()) == 3


def test_greedy_summary_and_no_format_check():
    results = [
        _result("a", "x", [True], ["A"], None, [4]),
        _result("b", "x", [False], [None], None, [6], [False]),
    ]
    m = summarize(results, k=1)
    assert m["accuracy"] == 0.5 and m["pass_at_1"] == 0.5
    assert m["format_accuracy"] is None  # non-thinking: no format to check
    assert m["reasoning_rate"] is None
    assert m["truncated_rate"] == 0.5


def test_reasoning_rate_counts_think_blocks_that_hold_text():
    result = _result("a", "x", [True] * 4, ["A"] * 4, [True] * 4, [1] * 4)
    result.responses = [
        "<think>red then blue</think><answer>A</answer>",
        "<think></think><answer>A</answer>",
        "<think> \n </think><answer>A</answer>",
        "<answer>A</answer>",
    ]
    assert summarize([result], k=1)["reasoning_rate"] == pytest.approx(1 / 4)
    assert [has_reasoning(r) for r in result.responses] == [True, False, False, False]


def test_different_sample_counts_are_refused():
    with pytest.raises(ValueError):
        summarize([RESULTS[0], _result("d", "x", [True], ["A"], [True], [3])], k=1)


def test_report_json_predictions_and_table(tmp_path):
    report = EvalReport(
        metrics=summarize(RESULTS, k=2),
        per_type=summarize_by_type(RESULTS, k=2),
        skipped={"video_error": 1},
        skipped_examples=["v.jsonl, line 3: video_error"],
        settings={
            "k": 2,
            "n": 4,
            "temperature": 1.0,
            "data_file": "d.jsonl",
            "model": {"given": "m", "kind": "hf_model", "model_dir": "m"},
        },
        seconds=1.5,
        results=RESULTS,
        out_dir=tmp_path,
    )
    report.write_report()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["skipped"] == {
        "total": 1,
        "reasons": {"video_error": 1},
        "examples": ["v.jsonl, line 3: video_error"],
    }
    assert saved["metrics"]["pass_at_2"] == pytest.approx((5 / 6 + 1 / 2) / 3)
    with open(tmp_path / "p.jsonl", "w") as handle:
        write_prediction(handle, RESULTS[0])
    row = json.loads((tmp_path / "p.jsonl").read_text())
    assert tuple(row) == QUESTION_KEYS and row["num_correct"] == 2
    table = format_table(report)
    assert "accuracy            25.0%  (3/12)" in table
    assert "pass@2              44.4%" in table
    assert "count" in table and "1 skipped" in table
