"""DAPO pieces: group filter, batch accumulator, soft overlong penalty."""

import pytest
import torch

from longrl.algos.filters import (
    DynamicSamplingExhausted,
    GroupBatchAccumulator,
    keep_groups_with_variance,
)
from longrl.algos.overlong import soft_overlong_penalty


def test_keep_groups_with_variance_by_ids():
    rewards = [1.0, 1.0, 0.0, 1.0, 2.0, 2.0, 5.0, 0.5, 0.7]
    ids = ["a", "a", "b", "b", "c", "c", "d", "e", "e"]
    # a: equal ; b: differs ; c: equal ; d: single sample ; e: differs
    assert keep_groups_with_variance(rewards, ids) == ["b", "e"]
    # atol 0.25 exceeds e's spread (0.7 - 0.5 = 0.2): e is dropped too
    assert keep_groups_with_variance(rewards, ids, atol=0.25) == ["b"]


def test_keep_groups_grid_layout_and_order_of_first_appearance():
    grid = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.5]])
    assert keep_groups_with_variance(grid, None) == [0, 2]
    assert keep_groups_with_variance([0.0, 1.0, 3.0, 4.0], [9, 9, 2, 2]) == [9, 2]


def test_unscored_samples_do_not_count_towards_variance():
    # group 0 = [1, 0(unscored), 1] -> only equal scored values -> dropped
    valid = [True, False, True, True, True]
    kept = keep_groups_with_variance([1.0, 0.0, 1.0, 0.0, 1.0], [0, 0, 0, 1, 1], valid=valid)
    assert kept == [1]


def test_filter_is_deterministic_across_calls():
    rewards = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    ids = [3, 3, 1, 1, 2, 2]
    assert keep_groups_with_variance(rewards, ids) == keep_groups_with_variance(
        rewards.clone(), list(ids)
    )


def test_accumulator_fills_truncates_and_resets():
    acc = GroupBatchAccumulator(target_groups=3, max_tries=3)
    assert acc.add(["g1"]) is False
    assert acc.add([]) is False
    assert acc.tries == 2
    assert acc.add(["g2", "g3", "g4"]) is True
    assert acc.full and acc.ready
    with pytest.raises(RuntimeError, match="call take"):
        acc.add(["g5"])
    assert acc.take() == ["g1", "g2", "g3"]
    assert acc.dropped == 1
    assert acc.tries == 0 and acc.groups == ()


def test_accumulator_raises_after_max_tries_with_advice():
    acc = GroupBatchAccumulator(target_groups=2, max_tries=2)
    assert acc.add(["a"]) is False
    with pytest.raises(DynamicSamplingExhausted, match=r"kept 1 of 2 groups after 2 rounds"):
        acc.add([])
    with pytest.raises(RuntimeError, match="not ready"):
        GroupBatchAccumulator(target_groups=2).take()


def test_accumulator_partial_mode_returns_what_it_has():
    acc = GroupBatchAccumulator(target_groups=4, max_tries=2, on_exhausted="partial")
    assert acc.add(["a"]) is False
    assert acc.add(["b"]) is True
    assert acc.exhausted and not acc.full
    assert acc.take() == ["a", "b"]


def test_accumulator_unlimited_tries():
    acc = GroupBatchAccumulator(target_groups=1, max_tries=None)
    for _ in range(50):
        assert acc.add([]) is False
    assert acc.add(["x"]) is True
    with pytest.raises(ValueError, match="max_tries"):
        GroupBatchAccumulator(target_groups=1, max_tries=0)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (80, 0.0),  # = max_len - buffer
        (85, -0.25),  # (80 - 85) / 20
        (90, -0.5),
        (99, -0.95),
        (100, -1.0),  # = max_len
        (101, -1.0),  # beyond: flat
        (150, -1.0),
    ],
)
def test_soft_overlong_penalty_exact_values(length, expected):
    assert soft_overlong_penalty(length, max_len=100, buffer=20) == pytest.approx(expected)


def test_soft_overlong_penalty_factor_and_zero_buffer():
    assert soft_overlong_penalty(90, 100, 20, penalty_factor=0.5) == pytest.approx(-0.25)
    assert soft_overlong_penalty(101, 100, 20, penalty_factor=0.5) == -0.5
    assert soft_overlong_penalty(100, 100, 0) == 0.0
    assert soft_overlong_penalty(101, 100, 0) == -1.0
    with pytest.raises(ValueError, match="buffer"):
        soft_overlong_penalty(10, 100, 101)
