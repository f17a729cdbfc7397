"""M-RoPE positions by the Qwen reference rule, checked on hand-computed cases."""

import pytest
import torch

from longrl.models.rope import (
    PAD_POSITION,
    ModelInputError,
    MRopeSpec,
    continued_positions,
    mrope_position_ids,
    text_position_ids,
    vision_block_positions,
)

# Token ids of a toy vocabulary: S = <|vision_start|>, E = <|vision_end|>,
# V = <|video_pad|>, IMG = <|image_pad|>; 1..4 are ordinary text tokens.
S, E, V, IMG, PAD = 50, 51, 52, 53, 0
IDS = dict(video_token_id=V, image_token_id=IMG, vision_start_token_id=S)


def positions(ids, mask=None, **kwargs):
    ids_t = torch.tensor(ids if isinstance(ids[0], list) else [ids])
    mask_t = None if mask is None else torch.tensor(mask if isinstance(mask[0], list) else [mask])
    return mrope_position_ids(ids_t, mask_t, **IDS, **kwargs)


def same_on_axes(values):
    return [[v] * 3 for v in values]


def test_text_only_counts_up_on_all_axes():
    pos, delta = positions([1, 2, 3, 4])
    assert pos[:, 0].T.tolist() == same_on_axes([0, 1, 2, 3])
    assert delta.tolist() == [[0]]


def test_text_video_text_continues_after_the_largest_block_position():
    # grid (t=2, h=4, w=4), merge 2 -> 2x2x2 = 8 tokens; 1 s per temporal patch,
    # 2 tokens/s -> temporal step 2.
    ids = [1, 2, S] + [V] * 8 + [E, 3]
    pos, delta = positions(ids, video_grid_thw=torch.tensor([[2, 4, 4]]), second_per_grid_ts=[1.0])
    t, h, w = pos[:, 0].tolist()
    assert t[:3] == h[:3] == w[:3] == [0, 1, 2]
    assert t[3:11] == [3, 3, 3, 3, 5, 5, 5, 5]
    assert h[3:11] == [3, 3, 4, 4, 3, 3, 4, 4]
    assert w[3:11] == [3, 4, 3, 4, 3, 4, 3, 4]
    # max over the block is 5 (temporal), so the text resumes at 6.
    assert t[11:] == h[11:] == w[11:] == [6, 7]
    assert delta.tolist() == [[7 + 1 - 13]]


def test_two_videos_each_start_after_the_previous_block():
    # video 0: grid (2, 2, 2) -> 2 tokens, 2 s/patch -> temporal step 4.
    # video 1: grid (3, 2, 4) -> 3x1x2 = 6 tokens, 0.5 s/patch -> step 1.
    ids = [1, S, V, V, E, S] + [V] * 6 + [E, 2]
    pos, delta = positions(
        ids,
        video_grid_thw=torch.tensor([[2, 2, 2], [3, 2, 4]]),
        second_per_grid_ts=torch.tensor([2.0, 0.5]),
    )
    t, h, w = pos[:, 0].tolist()
    assert t[:2] == [0, 1]
    assert (t[2:4], h[2:4], w[2:4]) == ([2, 6], [2, 2], [2, 2])
    # E and S after video 0 resume at max(6) + 1.
    assert t[4:6] == h[4:6] == w[4:6] == [7, 8]
    assert t[6:12] == [9, 9, 10, 10, 11, 11]
    assert h[6:12] == [9] * 6
    assert w[6:12] == [9, 10, 9, 10, 9, 10]
    assert t[12:] == h[12:] == w[12:] == [12, 13]
    assert delta.tolist() == [[13 + 1 - 14]]


def test_image_block_uses_one_temporal_slot():
    # grid (1, 4, 6) -> 1x2x3 = 6 tokens.
    ids = [1, S] + [IMG] * 6 + [E, 2]
    pos, _ = positions(ids, image_grid_thw=torch.tensor([[1, 4, 6]]))
    t, h, w = pos[:, 0].tolist()
    assert t[2:8] == [2] * 6
    assert h[2:8] == [2, 2, 2, 3, 3, 3]
    assert w[2:8] == [2, 3, 4, 2, 3, 4]
    assert t[8:] == h[8:] == w[8:] == [5, 6]


def test_half_second_per_patch_is_not_truncated_to_zero():
    # fps 4 with temporal patch 2 -> 0.5 s per patch; 2 tokens/s -> step 1.
    # (An early transformers 4.x cast 0.5 to an integer first, giving step 0.)
    ids = [S] + [V] * 4 + [E]
    pos, _ = positions(ids, video_grid_thw=torch.tensor([[4, 2, 2]]), second_per_grid_ts=[0.5])
    assert pos[0, 0, 1:5].tolist() == [1, 2, 3, 4]
    assert pos[:, 0, 5].tolist() == [5, 5, 5]


def test_fractional_step_is_floored_after_multiplying():
    # 0.25 s per patch * 2 tokens/s = 0.5 per patch: floor(0, .5, 1, 1.5, 2) + start.
    ids = [S] + [V] * 5 + [E]
    pos, _ = positions(ids, video_grid_thw=torch.tensor([[5, 2, 2]]), second_per_grid_ts=[0.25])
    assert pos[0, 0, 1:6].tolist() == [1, 1, 2, 2, 3]
    assert pos[:, 0, 6].tolist() == [4, 4, 4]
    # 2/3 s per patch (fps 3) * 2 = 4/3: floor(0, 4/3, 8/3, 4) -> 0, 1, 2, 4 (no 3.999 -> 3).
    blk = vision_block_positions(0, (4, 2, 2), 2, (2 / 3) * 2)
    assert blk[0].tolist() == [0, 1, 2, 4]


def test_left_padding_does_not_move_real_positions():
    ids = [1, S] + [V] * 8 + [E, 2]
    grid = torch.tensor([[4, 2, 4]])  # 4x1x2 = 8 tokens, temporal step 2
    alone, alone_delta = positions(ids, video_grid_thw=grid, second_per_grid_ts=[1.0])
    assert alone[0, 0].tolist() == [0, 1, 2, 2, 4, 4, 6, 6, 8, 8, 9, 10]
    batch = [[3, 4, 3, *ids], [PAD] * 3 + ids]
    mask = [[1] * len(batch[0]), [0] * 3 + [1] * len(ids)]
    pos, delta = positions(
        batch, mask, video_grid_thw=grid.repeat(2, 1), second_per_grid_ts=[1.0, 1.0]
    )
    assert torch.equal(pos[:, 1, 3:], alone[:, 0])
    assert pos[:, 1, :3].tolist() == [[PAD_POSITION] * 3] * 3
    # Row 0 has 3 more text tokens in front: every position shifts by 3.
    assert torch.equal(pos[:, 0, 3:], alone[:, 0] + 3)
    assert delta[0].item() == delta[1].item() == alone_delta.item() == 10 + 1 - 12


def test_rope_deltas_give_the_positions_generation_continues_with():
    ids = [PAD, PAD, 1, S] + [V] * 2 + [E]
    mask = [0, 0, 1, 1, 1, 1, 1]
    pos, delta = positions(
        ids, mask, video_grid_thw=torch.tensor([[2, 2, 2]]), second_per_grid_ts=[2.0]
    )
    # temporal 2, 6 -> max 6; E at 7; the first new token at 8.
    assert pos[0, 0].tolist() == [1, 1, 0, 1, 2, 6, 7]
    nxt = continued_positions(delta, torch.tensor([5]), 3)
    assert nxt[:, 0].tolist() == [[8, 9, 10]] * 3


def test_text_position_ids_for_text_only_models():
    pos, delta = text_position_ids(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    assert pos.tolist() == [[PAD_POSITION, PAD_POSITION, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert delta.tolist() == [[0], [0]]
    assert continued_positions(delta, torch.tensor([3, 5]), 2, axes=1).tolist() == [
        [3, 4],
        [5, 6],
    ]


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        ([1, S, V, V], dict(), "more video blocks"),
        (
            [1, S, V, V],
            dict(video_grid_thw=torch.tensor([[2, 2, 4]]), second_per_grid_ts=[1]),
            "shorter",
        ),
        (
            [1, V, V],
            dict(video_grid_thw=torch.tensor([[2, 2, 2]]), second_per_grid_ts=[1]),
            "vision_start",
        ),
        (
            [1, 2],
            dict(video_grid_thw=torch.tensor([[2, 2, 2]]), second_per_grid_ts=[1]),
            "only 0 video",
        ),
        ([1, S, V], dict(video_grid_thw=torch.tensor([[2, 2, 2]])), "second_per_grid_ts"),
    ],
)
def test_inconsistent_inputs_raise(ids, kwargs, message):
    with pytest.raises(ModelInputError, match=message):
        positions(ids, **kwargs)


# --- transformers 5.x's own rule, for the record -------------------------------------


@pytest.fixture(scope="module")
def hf_model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]},
            bos_token_id=None,
            eos_token_id=None,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=1,
            out_hidden_size=32,
            tokens_per_second=2,
        ),
        image_token_id=IMG,
        video_token_id=V,
        vision_start_token_id=S,
        vision_end_token_id=E,
    )
    return Qwen2_5_VLModel._from_config(config)


def hf_positions(model, ids, grid, seconds):
    ids_t = torch.tensor([ids])
    types = (ids_t == V).int() * 2
    return model.get_rope_index(
        ids_t, types, video_grid_thw=torch.tensor(grid), second_per_grid_ts=torch.tensor(seconds)
    )


def test_transformers_rule_differs_after_a_long_video(hf_model):
    # 8 temporal patches at 1 s each: temporal positions reach start + 14, while
    # the grid is only 2x2 merged tokens wide/high.
    ids = [1, S] + [V] * 32 + [E, 2]
    grid, seconds = [[8, 4, 4]], [1.0]
    ours, our_delta = positions(ids, video_grid_thw=torch.tensor(grid), second_per_grid_ts=seconds)
    theirs, their_delta = hf_positions(hf_model, ids, grid, seconds)
    spec = MRopeSpec.from_config(hf_model.config)
    assert spec.tokens_per_second == 2 and spec.video_token_id == V
    # Same block, different continuation: ours resumes at 2 + 14 + 1, theirs at 2 + 2.
    assert torch.equal(ours[:, :, :34], theirs[:, :, :34])
    assert ours[0, 0, 34:].tolist() == [17, 18]
    assert theirs[0, 0, 34:].tolist() == [4, 5]
    assert our_delta.item() != their_delta.item()


def test_transformers_rule_matches_when_time_does_not_outrun_space(hf_model):
    # 2 temporal patches at 0.5 s -> temporal max start+1 <= spatial max start+1.
    ids = [1, S] + [V] * 8 + [E, 2]
    grid, seconds = [[2, 4, 4]], [0.5]
    ours, our_delta = positions(ids, video_grid_thw=torch.tensor(grid), second_per_grid_ts=seconds)
    theirs, their_delta = hf_positions(hf_model, ids, grid, seconds)
    assert torch.equal(ours, theirs)
    assert torch.equal(our_delta, their_delta)
