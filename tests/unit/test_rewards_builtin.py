"""Built-in rewards: accuracy, format, soft overlong."""

import pytest

from longrl.rewards.builtin import format_reward, multiple_choice_accuracy, soft_overlong_reward

OPTIONS = ["A. cat", "B. dog", "C. bird"]


def test_accuracy_scores_each_response_and_ignores_extra_columns():
    responses = [
        "<think>barks</think><answer>B</answer>",
        "<think>x</think><answer>cat</answer>",
        "no answer here",
        "<answer>dog</answer>",
    ]
    scores = multiple_choice_accuracy(
        responses,
        answer=["B", "B", "B", "(B) dog"],
        options=[OPTIONS] * 4,
        video=["v.mp4"] * 4,  # an unrelated column
    )
    assert scores == [1.0, 0.0, 0.0, 1.0]


def test_accuracy_is_none_for_other_problem_types():
    scores = multiple_choice_accuracy(
        ["<answer>B</answer>", "<answer>3</answer>", "<answer>B</answer>"],
        answer=["B", "3", "B"],
        options=[OPTIONS, None, OPTIONS],
        problem_type=["multiple choice", "numerical", None],
    )
    assert scores == [1.0, None, 1.0]


def test_accuracy_raises_on_a_ground_truth_that_is_not_a_choice():
    with pytest.raises(ValueError, match="ground-truth answer 'zebra'"):
        multiple_choice_accuracy(["<answer>A</answer>"], answer=["zebra"], options=[OPTIONS])


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("<think>a b c</think><answer>B</answer>", 1.0),
        ("  <think>\nreasoning\n</think>\n\n<answer> B </answer>\n", 1.0),
        ("<think></think><answer>B</answer>", 1.0),  # empty thinking is still the format
        ("<answer>B</answer>", 0.0),  # no think block
        ("<think>x</think>", 0.0),  # no answer
        ("<think>x</think><answer> </answer>", 0.0),  # blank answer
        ("<think>x</think> so <answer>B</answer>", 0.0),  # text between blocks
        ("<think>x</think><answer>B</answer> extra", 0.0),  # text after
        ("intro <think>x</think><answer>B</answer>", 0.0),  # text before
        ("<think>x</think><answer>A</answer><answer>B</answer>", 0.0),  # two answers
        ("<think>x<think>y</think></think><answer>B</answer>", 0.0),  # nested think
        ("<answer>B</answer><think>x</think>", 0.0),  # wrong order
    ],
)
def test_format_reward(response, score):
    assert format_reward([response]) == [score]


def test_format_reward_with_think_opened_by_the_prompt():
    responses = ["reasoning</think><answer>B</answer>", "<think>x</think><answer>B</answer>"]
    assert format_reward(responses, think_opened_in_prompt=True) == [1.0, 0.0]


def test_soft_overlong_reward_uses_the_response_length_column():
    # max_len 100, buffer 20: 80 -> 0 ; 90 -> (80 - 90) / 20 = -0.5 ; 120 -> -1
    scores = soft_overlong_reward(
        ["a", "b", "c"], response_length=[80, 90, 120], max_len=100, buffer=20
    )
    assert scores == [0.0, -0.5, -1.0]


def test_accuracy_scores_category_problem_types_with_options_or_letter_answers():
    # Datasets also use problem_type for the question's category ("temporal", "first").
    scores = multiple_choice_accuracy(
        ["<answer>B</answer>", "<answer>A</answer>", "<answer>12</answer>"],
        answer=["B", "<answer>B</answer>", "12"],
        options=[OPTIONS, None, None],
        problem_type=["temporal", "first", "counting"],
    )
    assert scores == [1.0, 0.0, None]
