"""User reward loading, built-in resolution, weighted combination, None handling."""

import textwrap

import pytest
import torch

from longrl.algos.advantages import grpo_advantages, rewards_from_scores
from longrl.rewards.builtin import format_reward, multiple_choice_accuracy
from longrl.rewards.combine import combine, mean_of_scored, score_metrics
from longrl.rewards.errors import RewardError
from longrl.rewards.loader import load_reward_function
from longrl.rewards.registry import REWARD_FUNCTIONS, resolve_reward_function


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            @dataclass
            class Config:  # dataclasses need the module registered while importing
                bonus: float = 0.25

            def length_bonus(responses, **columns):
                return [Config().bonus * len(r) for r in responses]

            def needs_answer(responses, answer, scale=1.0):
                return [scale * float(r == a) for r, a in zip(responses, answer)]

            NOT_CALLABLE = 3
            """
        )
    )
    return path


def test_load_user_reward_from_file(reward_file):
    fn = load_reward_function(f"{reward_file}:length_bonus")
    assert fn(["ab", "abcd"]) == [0.5, 1.0]


def test_loader_errors_name_the_file_and_the_name(reward_file, tmp_path):
    with pytest.raises(RewardError, match=r"my_rewards\.py defines no 'missing'.*length_bonus"):
        load_reward_function(f"{reward_file}:missing")
    with pytest.raises(RewardError, match=r"'NOT_CALLABLE' in reward file .* is a int"):
        load_reward_function(f"{reward_file}:NOT_CALLABLE")
    with pytest.raises(RewardError, match=r"nope\.py not found"):
        load_reward_function(f"{tmp_path}/nope.py:fn")
    with pytest.raises(RewardError, match="not of the form"):
        load_reward_function("my_rewards:fn")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad import')\n")
    with pytest.raises(RewardError, match=r"broken\.py failed to import: RuntimeError: bad import"):
        load_reward_function(f"{broken}:fn")


def test_resolve_builtins_files_and_settings(reward_file):
    assert REWARD_FUNCTIONS["accuracy"] is multiple_choice_accuracy
    assert resolve_reward_function("format") is format_reward
    overlong = resolve_reward_function("overlong", max_len=10, buffer=4)
    assert overlong(["x", "y"], response_length=[6, 8]) == [0.0, -0.5]  # (6 - 8) / 4
    scaled = resolve_reward_function(f"{reward_file}:needs_answer", scale=2.0)
    assert scaled(["B", "C"], answer=["B", "B"]) == [2.0, 0.0]
    with pytest.raises(RewardError, match=r"unknown reward 'acc'.*path/to/file.py"):
        resolve_reward_function("acc")
    with pytest.raises(RewardError, match=r"'overlong' has no setting\(s\) \['max_length'\]"):
        resolve_reward_function("overlong", max_length=10, buffer=4)


def test_combine_weights_totals_and_per_function_values():
    reward = combine({"accuracy": 1.0, "format": 0.5})
    responses = [
        "<think>x</think><answer>B</answer>",  # right, well formatted: 1 + 0.5
        "<answer>B</answer>",  # right, no think: 1 + 0
        "<think>x</think><answer>A</answer>",  # wrong, formatted: 0 + 0.5
        "<think>x</think><answer>7</answer>",  # open-ended: accuracy None, format 1 -> 0.5
    ]
    scores = reward(
        responses,
        answer=["B", "B", "B", "7"],
        options=[["A. x", "B. y"]] * 3 + [None],
        problem_type=["multiple choice"] * 3 + ["numerical"],
    )
    assert scores.per_function["accuracy"] == [1.0, 1.0, 0.0, None]
    assert scores.per_function["format"] == [1.0, 0.0, 1.0, 1.0]
    assert scores.total == [1.5, 1.0, 0.5, 0.5]
    assert scores.errors == {"accuracy": 0, "format": 0}
    metrics = score_metrics(scores)
    assert metrics["reward/accuracy/mean"] == pytest.approx(2 / 3)  # over scored samples
    assert metrics["reward/accuracy/scored_fraction"] == 0.75
    assert metrics["reward/total/mean"] == pytest.approx(3.5 / 4)
    # population std of the scored accuracies [1, 1, 0]: sqrt(2/9)
    assert metrics["reward/accuracy/std"] == pytest.approx((2 / 9) ** 0.5)
    # totals [1.5, 1, 0.5, 0.5], mean 0.875: sqrt((0.390625 + 0.015625 + 0.140625 * 2) / 4)
    assert metrics["reward/total/std"] == pytest.approx((0.6875 / 4) ** 0.5)


def test_combine_none_everywhere_gives_none_total_and_invalid_sample(reward_file):
    def only_first(responses, **_):
        return [1.0] + [None] * (len(responses) - 1)

    def always_fails(responses, **_):
        raise RuntimeError("judge down")

    reward = combine(
        {"first": 2.0, "judge": 1.0},
        functions={"first": only_first, "judge": always_fails},
        on_error=None,
    )
    scores = reward(["a", "b", "c"])
    assert scores.total == [2.0, None, None]
    assert scores.errors == {"first": 0, "judge": 3}
    assert reward.error_counts == {"first": 0, "judge": 3}
    assert mean_of_scored(scores.total) == 2.0
    assert mean_of_scored([None]) is None
    # downstream: None totals become invalid samples with zero advantage
    rewards, valid = rewards_from_scores(scores.total)
    assert valid.tolist() == [True, False, False]
    assert grpo_advantages(rewards, torch.ones(3, 1), [0, 0, 0], valid=valid).abs().sum() == 0


def test_combine_with_user_file_and_settings(reward_file):
    spec = f"{reward_file}:needs_answer"
    reward = combine({spec: 0.5, "format": 0.0}, settings={spec: {"scale": 4.0}})
    scores = reward(["B", "C"], answer=["B", "B"])
    assert scores.total == [2.0, 0.0]  # 0.5 * 4 * 1 ; format has weight 0
    with pytest.raises(RewardError, match="settings given for rewards not in weights"):
        combine({"format": 1.0}, settings={"overlong": {"max_len": 3}})
    with pytest.raises(RewardError, match="on_error"):
        combine({"format": 1.0}, on_error="skip")
