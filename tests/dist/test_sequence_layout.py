"""Pure layout maths of sequence parallelism (no processes): positions, masks, heads."""

from __future__ import annotations

import pytest
import torch

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.sequence_layout import (
    SequenceLayout,
    call_positions,
    full_attention_mask,
    key_positions,
    local_attention_mask,
    local_key_positions,
    padded_width,
    query_positions,
)
from longrl.parallel.ulysses import check_heads, kv_replication


def _layout(sp: int, *widths: int, replicated=()) -> SequenceLayout:
    layout = SequenceLayout(sp)
    for i, width in enumerate(widths):
        layout = layout.appended(width, replicated=i in replicated)
    return layout


def test_calls_are_left_padded_to_a_multiple_of_sp():
    assert [padded_width(w, 4) for w in (1, 4, 5, 11)] == [4, 4, 8, 12]
    assert call_positions(5, 2, base=3).tolist() == [-1, 3, 4, 5, 6, 7]
    assert call_positions(4, 2, base=0).tolist() == [0, 1, 2, 3]


def test_keys_after_the_all_to_all_are_rank_major_over_calls():
    # Call 0: 5 tokens -> [-1, 0, 1 | 2, 3, 4]; call 1: 3 tokens -> [-1, 5 | 6, 7].
    layout = _layout(2, 5, 3)
    assert key_positions(layout).tolist() == [-1, 0, 1, -1, 5, 2, 3, 4, 6, 7]
    assert query_positions(layout).tolist() == [-1, 5, 6, 7]
    assert (layout.logical_length, layout.local_length) == (8, 5)


def test_mask_follows_logical_positions_and_the_callers_padding():
    layout = _layout(2, 5, 3)
    # Row 0: tokens 0-1 are left padding; row 1: no padding.
    caller = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1] * 8])
    mask = full_attention_mask(layout, caller)
    keys = key_positions(layout)
    assert mask.shape == (2, 1, 4, 10)
    for row in range(2):
        for q, logical in enumerate(query_positions(layout).tolist()):
            if logical < 0:  # SP pad query: sees every key (finite, unused)
                assert mask[row, 0, q].all()
                continue
            expected = [k >= 0 and k <= logical and bool(caller[row, k]) for k in keys.tolist()]
            assert mask[row, 0, q].tolist() == expected


def test_one_rank_one_call_is_the_usual_causal_padding_mask():
    caller = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    mask = full_attention_mask(_layout(1, 5), caller)[:, 0]
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    expected = causal & caller.bool()[:, None, :]
    real = caller.bool()
    assert torch.equal(mask[real], expected[real])
    # Left-padding queries have no real key at or before them: they see every key.
    assert mask[0, :2].all()


def test_mask_width_must_cover_past_and_new_tokens():
    with pytest.raises(ParallelConfigError, match=r"expected \[batch, 8\]"):
        full_attention_mask(_layout(2, 5, 3), torch.ones(2, 3))


def test_head_checks_and_kv_replication():
    assert [kv_replication(2, sp) for sp in (1, 2, 4, 8)] == [1, 1, 2, 4]
    assert kv_replication(4, 8) == 2 and kv_replication(8, 4) == 1
    check_heads(4, 2, 4)
    with pytest.raises(ParallelConfigError, match="num_attention_heads=6 is not divisible by sp=4"):
        check_heads(6, 2, 4)


def test_replicated_calls_count_once_in_their_owners_cache():
    # Prefill of 5 (sharded), two decode steps (replicated), then 3 tokens sharded again.
    layout = _layout(2, 5, 1, 1, 3, replicated=(1, 2))
    assert local_key_positions(layout, 0).tolist() == [-1, 0, 1, 5, 6, -1, 7]
    assert local_key_positions(layout, 1).tolist() == [2, 3, 4, -1, -1, 8, 9]
    assert key_positions(layout).tolist() == [-1, 0, 1, 5, 6, -1, 7, 2, 3, 4, -1, -1, 8, 9]
    assert (layout.logical_length, layout.local_length) == (10, 7)
    decode = _layout(2, 5, 1, 1, replicated=(1, 2))
    assert query_positions(decode).tolist() == [6]
    caller = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1] * 7])
    # Rank 1 holds logical 2, 3, 4 and two ignored copies; rank 0 holds 0, 1, 5, 6.
    assert local_attention_mask(decode, caller, 1)[:, 0, 0].tolist() == [
        [True, True, True, False, False],
        [True, True, True, False, False],
    ]
    assert local_attention_mask(decode, caller, 0)[:, 0, 0].tolist() == [
        [False, False, True, True, True],
        [False, True, True, True, True],
    ]
    # A rank may see no key of a row at all: left empty (the cross-rank softmax skips it).
    early = _layout(2, 5, 1, replicated=(1,))
    padded_row = torch.tensor([[0, 0, 0, 0, 0, 1]])
    assert not local_attention_mask(early, padded_row, 1).any()
