"""Eval scoring: hand-written responses against gold answers, pass@k by hand."""

import pytest

from longrl.data.sample import Sample
from longrl.eval.scoring import UnscorableQuestion, gold_letter, pass_at_k, score_question

OPTIONS = ["A. yellow", "B. red", "C. blue", "D. green"]


def _sample(answer="C", options=OPTIONS, problem_type="before", **extra):
    return Sample(
        problem_id="q1",
        prompt="<video>Which color comes right before the cyan scene?",
        answer=answer,
        videos=("v.mp4",),
        problem_type=problem_type,
        extra={"options": options, **extra} if options is not None else dict(extra),
    )


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
        (3, 0, 3, 0.0),  # n == k: any correct
        (3, 1, 3, 1.0),
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct one
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, -1, 1), (3, 1, 4), (3, 1, 0)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_score_question_reads_each_response_like_the_reward():
    responses = [
        "<think>blue comes before cyan</think><answer>C</answer>",  # letter, right format
        "<think>x</think><answer>blue</answer>",  # option text, right format
        "The answer is (B)",  # answer phrase, no tags
        "\n\n\n",  # nothing
        "<answer>A</answer>",  # no think block
        "C",  # bare letter
        "<think>a</think><answer>C</answer><answer>D</answer>",  # last tag counts; bad format
    ]
    result = score_question(
        _sample(),
        responses,
        lengths=[12, 9, 6, 3, 4, 2, 14],
        finished=[True, True, True, False, True, True, True],
        thinking=True,
    )
    assert result.answer == "C"
    assert result.extracted == ["C", "C", "B", None, "A", "C", "D"]
    assert result.correct == [True, True, False, False, False, True, False]
    assert result.format_ok == [True, True, False, False, False, False, False]
    assert result.num_correct == 3
    assert result.response_length == [12, 9, 6, 3, 4, 2, 14]
    assert result.pass_at(1) == pytest.approx(3 / 7)
    assert result.pass_at(7) == 1.0


def test_gold_given_as_text_or_label_is_compared_by_letter_not_string():
    for answer in ("blue", "C. blue", "(C)", "<answer>C</answer>"):
        result = score_question(
            _sample(answer=answer),
            ["<think>t</think><answer>C</answer>", "<think>t</think><answer>(c) blue</answer>"],
            lengths=[5, 7],
            finished=[True, True],
            thinking=True,
        )
        assert result.answer == "C"
        assert result.correct == [True, True]


def test_non_thinking_eval_checks_no_format():
    result = score_question(
        _sample(), ["<answer>C</answer>"], lengths=[4], finished=[True], thinking=False
    )
    assert result.format_ok is None
    assert result.correct == [True]


def test_row_has_every_column():
    result = score_question(
        _sample(), ["<answer>D</answer>"], lengths=[4], finished=[False], thinking=True
    )
    row = result.as_row()
    assert row["problem_id"] == "q1" and row["problem_type"] == "before"
    assert row["answer"] == "C" and row["extracted"] == ["D"] and row["correct"] == [False]
    assert row["num_correct"] == 0 and row["finished"] == [False]
    assert row["question"].endswith("before the cyan scene?")


def test_unscorable_questions_have_a_reason():
    with pytest.raises(UnscorableQuestion) as err:
        gold_letter(_sample(answer="3.5", options=None, problem_type="numerical"))
    assert err.value.reason == "not_multiple_choice"
    with pytest.raises(UnscorableQuestion) as err:
        gold_letter(_sample(answer="E"))  # not one of A-D
    assert err.value.reason == "bad_answer"
    assert "q1" in str(err.value)
    # A letter answer without an options column is still multiple choice.
    assert gold_letter(_sample(answer="B", options=None, problem_type=None)) == "B"


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError):
        score_question(_sample(), ["C", "D"], lengths=[1], finished=[True, True], thinking=True)
