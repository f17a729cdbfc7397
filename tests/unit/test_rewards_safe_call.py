"""SafeReward: per-sample error isolation, logging, counting, contract checks."""

import logging
import math

import pytest

from longrl.rewards.errors import RewardError
from longrl.rewards.safe_call import SafeReward


def fails_on_bad(responses, **_):
    scores = []
    for r in responses:
        if r == "bad":
            raise KeyError("no score for 'bad'")
        scores.append(float(len(r)))
    return scores


def test_exception_on_one_sample_scores_only_that_sample(caplog):
    safe = SafeReward(fails_on_bad, "length", on_error=-0.5)
    with caplog.at_level(logging.WARNING, logger="longrl.rewards"):
        scores = safe(["ab", "bad", "abcd"])
    assert scores == [2.0, -0.5, 4.0]
    assert safe.error_count == 1
    [record] = caplog.records
    assert record.name == "longrl.rewards"
    assert "'length' failed on sample 1" in record.getMessage()
    assert "KeyError" in record.getMessage()
    # counts accumulate across calls
    safe(["bad", "bad"])
    assert safe.error_count == 3


def test_on_error_none_and_raise():
    assert SafeReward(fails_on_bad, "length", on_error=None)(["bad", "a"]) == [None, 1.0]
    with pytest.raises(RewardError, match=r"'length' failed on sample 2: KeyError"):
        SafeReward(fails_on_bad, "length", on_error="raise")(["a", "b", "bad"])
    with pytest.raises(RewardError, match="on_error must be"):
        SafeReward(fails_on_bad, "length", on_error="zero")


def test_none_results_stay_none_and_bools_become_floats():
    def mixed(responses, **_):
        return [None, True, 0]

    assert SafeReward(mixed, "mixed")(["x", "y", "z"]) == [None, 1.0, 0.0]


def test_non_finite_or_non_numeric_values_count_as_sample_errors():
    def odd(responses, **_):
        return [math.nan, "high", 1.0]

    safe = SafeReward(odd, "odd", on_error=0.0)
    assert safe(["x", "y", "z"]) == [0.0, 0.0, 1.0]
    assert safe.error_count == 2


def test_wrong_result_length_is_a_contract_error():
    def short(responses, **_):
        return [1.0]

    with pytest.raises(RewardError, match="must return a list of 2 scores"):
        SafeReward(short, "short")(["x", "y"])


def test_columns_are_filtered_by_signature_and_checked():
    seen = {}

    def needs_answer(responses, answer):
        seen["answer"] = answer
        return [float(r == a) for r, a in zip(responses, answer, strict=True)]

    safe = SafeReward(needs_answer, "exact")
    assert safe(["B", "C"], answer=["B", "B"], video=["v1", "v2"]) == [1.0, 0.0]
    assert seen["answer"] == ["B", "B"]
    with pytest.raises(RewardError, match=r"'exact' needs column\(s\) \['answer'\]"):
        safe(["B"], problem=["q"])
    with pytest.raises(RewardError, match="column 'answer' has 1 values for 2 responses"):
        safe(["B", "C"], answer=["B"])


def test_per_sample_fallback_passes_that_sample_columns():
    def picky(responses, *, answer, **_):
        if "boom" in answer:
            raise ValueError("boom")
        return [1.0 for _ in responses]

    safe = SafeReward(picky, "picky", on_error=0.0)
    assert safe(["r1", "r2", "r3"], answer=["ok", "boom", "ok"]) == [1.0, 0.0, 1.0]
    assert safe.error_count == 1
