"""The input builder on hand-made token rows and pixels (no processor involved).

A tiny Qwen2.5-VL in fp32 checks that embeddings scattered at the video pads plus
explicit reference-rule positions give the same logits as transformers' own
pixel path given the same positions.
"""

import pytest
import torch

from longrl.models.inputs import (
    ModelInputError,
    append_responses,
    assemble_prompt_batch,
    compute_video_embeds,
    embed_inputs,
    forward_logits,
)
from longrl.models.rope import PAD_POSITION

VOCAB, S, E, V, IMG, PAD = 300, 292, 293, 291, 290, 0
PATCH_DIM = 3 * 2 * 14 * 14  # channels * temporal patch * patch * patch


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6]},
            bos_token_id=None,
            eos_token_id=None,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=128,
            tokens_per_second=2,
            fullatt_block_indexes=[1],
        ),
        image_token_id=IMG,
        video_token_id=V,
        vision_start_token_id=S,
        vision_end_token_id=E,
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.float32).eval()


def video_batch():
    """Two prompts: 4 frames (grid 2x4x4 -> 8 tokens) and 8 frames (4x4x4 -> 16 tokens)."""
    torch.manual_seed(1)
    grids = torch.tensor([[2, 4, 4], [4, 4, 4]])
    pixels = torch.randn(int(grids.prod(-1).sum()), PATCH_DIM)
    rows = [
        [10, 11, S] + [V] * 8 + [E, 12, 13, 14],
        [10, S] + [V] * 16 + [E, 15, 16, 17, 18, 19, 20],
    ]
    return rows, pixels, grids, torch.tensor([1.0, 1.0])


def real(t, mask):
    return t[mask.bool()]


def test_scattered_embeddings_with_our_positions_match_the_pixel_path(model):
    rows, pixels, grids, seconds = video_batch()
    mi = assemble_prompt_batch(
        rows,
        model.config,
        pad_token_id=PAD,
        pixel_values_videos=pixels,
        video_grid_thw=grids,
        second_per_grid_ts=seconds,
    )
    assert mi.input_ids.shape == (2, 25) and mi.position_ids.shape == (3, 2, 25)
    assert mi.input_ids[0, :11].tolist() == [PAD] * 10 + [10]  # left padded
    assert mi.video_rows == ((0,), (1,))
    with torch.no_grad():
        ours = forward_logits(model, mi)
        plain = model(
            input_ids=mi.input_ids,
            attention_mask=mi.attention_mask,
            pixel_values_videos=pixels,
            video_grid_thw=grids,
            second_per_grid_ts=seconds,
            position_ids=mi.position_ids,
        ).logits
    diff = (real(ours, mi.attention_mask) - real(plain, mi.attention_mask)).abs().max().item()
    assert diff <= 1e-5


def test_cached_embeddings_give_the_same_logits_and_wrong_counts_raise(model):
    rows, pixels, grids, seconds = video_batch()
    mi = assemble_prompt_batch(
        rows,
        model.config,
        pad_token_id=PAD,
        pixel_values_videos=pixels,
        video_grid_thw=grids,
        second_per_grid_ts=seconds,
    )
    with torch.no_grad():
        embeds = compute_video_embeds(model, mi)
        assert [e.shape[0] for e in embeds] == [8, 16]
        assert torch.equal(forward_logits(model, mi, embeds), forward_logits(model, mi))
        with pytest.raises(ModelInputError, match=r"video 1: embedding of shape \(15, 128\)"):
            embed_inputs(model, mi, [embeds[0], embeds[1][:15]])
        with pytest.raises(ModelInputError, match="1 video embeddings given for 2 videos"):
            embed_inputs(model, mi, [embeds[0]])
    # Videos attached to the wrong rows: the grids no longer fit the blocks.
    with pytest.raises(ModelInputError, match="row 0: video 0 has grid"):
        assemble_prompt_batch(
            rows,
            model.config,
            pad_token_id=PAD,
            video_grid_thw=grids,
            second_per_grid_ts=seconds,
            video_rows=[(1,), (0,)],
        )


def test_appended_replies_see_the_same_logits_as_one_full_build(model):
    rows, pixels, grids, seconds = video_batch()
    replies = [[40, 41, 42], [43, 44, 45, 46, 47]]
    common = dict(
        pad_token_id=PAD,
        pixel_values_videos=pixels,
        video_grid_thw=grids,
        second_per_grid_ts=seconds,
    )
    prompt = assemble_prompt_batch(rows, model.config, **common)
    both = append_responses(prompt, replies)
    assert both.input_ids.shape == (2, 25 + 5)
    assert both.response_mask[0].tolist() == [0] * 25 + [1, 1, 1, 0, 0]
    assert both.position_ids[:, 0, -2:].tolist() == [[PAD_POSITION] * 2] * 3
    with torch.no_grad():
        got = forward_logits(model, both)
        for b, reply in enumerate(replies):
            full = assemble_prompt_batch(
                [rows[b] + reply],
                model.config,
                **{
                    **common,
                    "pixel_values_videos": pixels[:32] if b == 0 else pixels[32:],
                    "video_grid_thw": grids[b : b + 1],
                    "second_per_grid_ts": seconds[b : b + 1],
                },
            )
            # Positions of the reply equal those a single build gives them.
            n = len(reply)
            cols = slice(both.prompt_width, both.prompt_width + n)
            assert torch.equal(both.position_ids[:, b, cols], full.position_ids[:, 0, -n:])
            want = forward_logits(model, full)[0, -n - 1 :]
            have = got[b, both.prompt_width - 1 : both.prompt_width + n]
            assert (have - want).abs().max().item() <= 1e-5


def test_group_rows_share_one_video_entry(model):
    rows, pixels, grids, seconds = video_batch()
    prompt = assemble_prompt_batch(
        rows,
        model.config,
        pad_token_id=PAD,
        pixel_values_videos=pixels,
        video_grid_thw=grids,
        second_per_grid_ts=seconds,
    )
    group = append_responses(prompt, [[40], [41, 42], [43]], prompt_index=[1, 1, 0])
    assert group.video_rows == ((1,), (1,), (0,))
    assert group.video_grid_thw.shape[0] == 2  # still one entry per distinct video
    with torch.no_grad():
        logits = forward_logits(model, group)
        single_mi = append_responses(prompt, [[41, 42], [43]], prompt_index=[1, 0])
        single = forward_logits(model, single_mi)
    # Row 1 of the group is row 0 of the plain batch, row 2 is row 1 (real tokens only).
    for g, p in ((1, 0), (2, 1)):
        keep = group.attention_mask[g].bool()
        assert torch.equal(keep, single_mi.attention_mask[p].bool())
        assert (logits[g, keep] - single[p, keep]).abs().max().item() <= 1e-5


def test_text_only_model_gets_one_dimensional_positions():
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=16,
    )
    mi = assemble_prompt_batch([[1, 2, 3], [4, 5]], config, pad_token_id=0)
    assert mi.position_ids.tolist() == [[0, 1, 2], [PAD_POSITION, 0, 1]]
    both = append_responses(mi, [[7], [8, 9]])
    assert both.position_ids.tolist() == [[0, 1, 2, 3, PAD_POSITION], [PAD_POSITION, 0, 1, 2, 3]]
    with pytest.raises(ModelInputError, match="text-only"):
        assemble_prompt_batch(
            [[1]], config, pad_token_id=0, video_grid_thw=torch.tensor([[2, 2, 2]])
        )


def test_rollout_style_reply_tensor_with_mask_equals_token_lists(model):
    rows, pixels, grids, seconds = video_batch()
    prompt = assemble_prompt_batch(
        rows,
        model.config,
        pad_token_id=PAD,
        pixel_values_videos=pixels,
        video_grid_thw=grids,
        second_per_grid_ts=seconds,
    )
    ids = torch.tensor([[40, 41, 7, 7], [42, 43, 44, 45], [46, 7, 7, 7]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    from_tensor = append_responses(prompt, ids, torch.tensor([0, 0, 1]), response_mask=mask)
    from_lists = append_responses(prompt, [[40, 41], [42, 43, 44, 45], [46]], [0, 0, 1])
    for name in ("input_ids", "attention_mask", "position_ids", "response_mask"):
        assert torch.equal(getattr(from_tensor, name), getattr(from_lists, name)), name
    # Reply positions continue the prompt by +1 per token; padding gets PAD_POSITION.
    last = int(prompt.position_ids[:, 0].max())
    assert from_lists.position_ids[0, 1, -4:].tolist() == [last + 1, last + 2, last + 3, last + 4]
    assert from_lists.position_ids[:, 0, -2:].tolist() == [[PAD_POSITION] * 2] * 3
    with pytest.raises(ModelInputError, match="prefix"):
        append_responses(prompt, ids, [0, 0, 1], response_mask=torch.tensor([[0, 1, 0, 0]] * 3))
    with pytest.raises(ModelInputError, match="3 replies but 2 prompt indices"):
        append_responses(prompt, ids, [0, 0], response_mask=mask)


def test_video_clip_rate_from_decoded_frames():
    from types import SimpleNamespace

    from longrl.models.inputs import VideoClip

    frames = torch.zeros(16, 28, 28, 3, dtype=torch.uint8)
    decoded = SimpleNamespace(frames=frames, info=SimpleNamespace(duration=8.0, path="v.mp4"))
    assert VideoClip.from_decoded(decoded).fps == 2.0
    decoded.info.duration = 0.0
    with pytest.raises(ModelInputError, match=r"v\.mp4: duration 0\.0"):
        VideoClip.from_decoded(decoded)
