import pytest

from longrl.train.batches import PromptOrder


def test_epochs_are_permutations_and_differ():
    order = PromptOrder(list(range(5)), seed=3)
    first = [order.next() for _ in range(5)]
    second = [order.next() for _ in range(5)]
    assert sorted(first) == sorted(second) == [0, 1, 2, 3, 4]
    assert first != second
    assert order.epoch == 1


def test_resume_continues_the_same_sequence():
    straight = PromptOrder(list("abcdefg"), seed=9)
    expected = [straight.next() for _ in range(17)]
    first = PromptOrder(list("abcdefg"), seed=9)
    head = [first.next() for _ in range(8)]
    resumed = PromptOrder(list("abcdefg"), seed=9)
    resumed.load_state_dict(first.state_dict())
    tail = [resumed.next() for _ in range(9)]
    assert head + tail == expected


def test_no_shuffle_keeps_file_order_and_mismatch_is_refused():
    order = PromptOrder([1, 2, 3], seed=0, shuffle=False)
    assert [order.next() for _ in range(4)] == [1, 2, 3, 1]
    other = PromptOrder([1, 2], seed=0)
    with pytest.raises(ValueError, match="same dataset"):
        other.load_state_dict(order.state_dict())
    with pytest.raises(ValueError, match="no training samples"):
        PromptOrder([], seed=0)
