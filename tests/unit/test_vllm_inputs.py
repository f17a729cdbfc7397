"""The vLLM backend's input mapping and refusals: pure functions, no vLLM needed."""

import math

import pytest
import torch

from longrl.models.rope import MRopeSpec, mrope_position_ids
from longrl.rollout.sampling import SamplingParams
from longrl.rollout.vllm_inputs import (
    VllmUnsupportedError,
    assemble_output,
    choose_logprobs_mode,
    collapse_vision_blocks,
    interval_reproducing,
    matching_logprobs_modes,
    mrope_request,
    recover_vision_items,
    text_request,
    vllm_row_positions,
)

START, IMAGE, VIDEO = 7, 8, 9
SPEC = MRopeSpec(video_token_id=VIDEO, image_token_id=IMAGE, vision_start_token_id=START)


def _positions(ids, *, video_grids=(), seconds=(), image_grids=()):
    positions, _ = mrope_position_ids(
        torch.tensor([ids]),
        video_grid_thw=torch.tensor(video_grids) if video_grids else None,
        second_per_grid_ts=list(seconds) if seconds else None,
        image_grid_thw=torch.tensor(image_grids) if image_grids else None,
        video_token_id=VIDEO,
        image_token_id=IMAGE,
        vision_start_token_id=START,
    )
    return positions[:, 0]


# A video of grid (2, 4, 4) = 2 x 2 x 2 tokens, then an image of grid (1, 4, 4) = 4 tokens.
ROW = [1, 2, START, *[VIDEO] * 8, 3, 4, START, *[IMAGE] * 4, 5]


@pytest.mark.parametrize(
    ("greedy_or_t", "top_p", "top_k", "expected"),
    [
        (0.0, 0.9, 20, ("processed_logprobs", "raw_logprobs")),
        (1.0, 1.0, -1, ("processed_logprobs", "raw_logprobs")),
        (0.7, 1.0, -1, ("processed_logprobs",)),
        (1.0, 0.9, -1, ("raw_logprobs",)),
        (1.0, 1.0, 20, ("raw_logprobs",)),
        (0.7, 0.9, -1, ()),
    ],
)
def test_log_prob_modes_that_equal_training(greedy_or_t, top_p, top_k, expected):
    params = SamplingParams(temperature=greedy_or_t, top_p=top_p, top_k=top_k)
    assert matching_logprobs_modes(params) == expected
    if expected:
        assert choose_logprobs_mode(params) == expected[0]
    else:
        with pytest.raises(VllmUnsupportedError, match="temperature"):
            choose_logprobs_mode(params)


def test_interval_hand_case():
    # k=1: [1, 2); k=2: [1, 1.5); k=3: [4/3, 5/3) -> [4/3, 1.5), middle 17/12.
    assert interval_reproducing([0, 1, 2, 4]) == pytest.approx(17 / 12)
    assert interval_reproducing([0]) == 1.0


@pytest.mark.parametrize("interval", [0.25, 0.5, 1.0, 4 / 3, 8 / 3, 3.0, 2 * 0.6])
@pytest.mark.parametrize("frames", [2, 17, 4096])
def test_interval_reproduces_floored_offsets(interval, frames):
    offsets = [math.floor(k * interval + 1e-6) for k in range(frames)]
    chosen = interval_reproducing(offsets)
    # vLLM truncates k * interval after a round trip through seconds per grid (2 tok/s).
    factor = (chosen / 2.0) * 2.0
    assert [int(k * factor) for k in range(frames)] == offsets


@pytest.mark.parametrize("offsets", [[0, 2, 2], [1, 2], [0, 3, 3, 3]])
def test_offsets_no_interval_gives_are_refused(offsets):
    with pytest.raises(VllmUnsupportedError):
        interval_reproducing(offsets)


def test_vision_items_recovered_from_reference_positions():
    positions = _positions(ROW, video_grids=[[2, 4, 4]], seconds=[1.0], image_grids=[[1, 4, 4]])
    # Hand check of the reference rule: the video starts at 3, its second temporal patch
    # is 1 s * 2 tok/s later, and the text after it continues at max + 1 = 6.
    assert positions[:, 3].tolist() == [3, 3, 3]
    assert positions[:, 7].tolist() == [5, 3, 3]
    assert positions[:, 10].tolist() == [5, 4, 4]
    assert positions[:, 11].tolist() == [6, 6, 6]
    items = recover_vision_items(ROW, positions, SPEC)
    assert [(i.kind, i.start, i.grid_thw) for i in items] == [
        ("video", 3, (2, 4, 4)),
        ("image", 14, (1, 4, 4)),
    ]
    assert int(items[0].time_interval * 1) == 2  # offsets [0, 2]
    assert torch.equal(vllm_row_positions(len(ROW), items, SPEC), positions)


def test_two_videos_with_fractional_intervals_round_trip():
    row = [1, START, *[VIDEO] * 12, 2, START, *[VIDEO] * 8, 3]
    grids = [[3, 4, 4], [2, 4, 4]]
    positions = _positions(row, video_grids=grids, seconds=[2 / 3, 4 / 3])
    items = recover_vision_items(row, positions, SPEC)
    assert [i.grid_thw for i in items] == [(3, 4, 4), (2, 4, 4)]
    assert torch.equal(vllm_row_positions(len(row), items, SPEC), positions)


def test_collapse_keeps_one_pad_per_block():
    items = recover_vision_items(
        ROW, _positions(ROW, video_grids=[[2, 4, 4]], seconds=[1.0], image_grids=[[1, 4, 4]]), SPEC
    )
    assert collapse_vision_blocks(ROW, items, 2) == [1, 2, START, VIDEO, 3, 4, START, IMAGE, 5]


def test_mrope_request_sends_block_embeddings_grid_and_seconds():
    positions = _positions(ROW, video_grids=[[2, 4, 4]], seconds=[1.0], image_grids=[[1, 4, 4]])
    ids = torch.tensor(ROW)
    token = torch.randn(32, 6)[ids]
    embeds = token.clone()
    embeds[3:11] = torch.randn(8, 6)  # the video's embeddings
    embeds[14:18] = torch.randn(4, 6)  # the image's
    request, full = mrope_request(0, ids, embeds, positions, SPEC, token)
    assert full == ROW
    assert request["prompt_token_ids"] == [1, 2, START, VIDEO, 3, 4, START, IMAGE, 5]
    video, image = request["multi_modal_data"]["video"], request["multi_modal_data"]["image"]
    assert torch.equal(video["video_embeds"], embeds[3:11])
    assert video["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert int(video["second_per_grid_ts"][0] * 2 * 1) == 2
    assert torch.equal(image["image_embeds"], embeds[14:18])
    assert image["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_mrope_request_refuses_what_vllm_would_see_differently():
    positions = _positions(ROW, video_grids=[[2, 4, 4]], seconds=[1.0], image_grids=[[1, 4, 4]])
    ids = torch.tensor(ROW)
    token = torch.randn(32, 6)[ids]
    # transformers 5.x continues the text after a video at start + max(h, w)/m, not max + 1.
    shifted = positions.clone()
    shifted[:, 11:] -= 1
    with pytest.raises(VllmUnsupportedError, match="different 3-D positions"):
        mrope_request(0, ids, token, shifted, SPEC, token)
    altered = token.clone()
    altered[0] += 1.0  # a text token that is not the model's embedding of its id
    with pytest.raises(VllmUnsupportedError, match="token embeddings"):
        mrope_request(0, ids, altered, positions, SPEC, token)
    with pytest.raises(VllmUnsupportedError, match="needs inputs_embeds"):
        mrope_request(0, ids, None, positions, SPEC, None)


def test_text_only_row_on_an_mrope_model_is_sent_as_token_ids():
    row = [1, 2, 3, 4]
    request, full = mrope_request(0, torch.tensor(row), None, _positions(row), SPEC, None)
    assert request == {"prompt_token_ids": row}
    assert full == row


def test_text_request_needs_positions_zero_to_n():
    ids = torch.tensor([5, 6, 7])
    assert text_request(0, ids, None, torch.arange(3)) == {"prompt_token_ids": [5, 6, 7]}
    embeds = torch.randn(3, 4)
    assert text_request(0, None, embeds, torch.arange(3))["prompt_embeds"] is embeds
    with pytest.raises(VllmUnsupportedError, match=r"not 0\.\.2"):
        text_request(1, ids, None, torch.arange(3) + 2)


def test_assemble_output_pads_masks_and_flags_stops():
    out = assemble_output(
        [[([5, 1], [-0.5, -0.25]), ([6], [-1.0])], [([7, 8, 9], [-0.1, -0.2, -0.3])] * 2],
        n=2,
        pad_token_id=0,
        stop_token_ids=[1],
    )
    assert out.response_ids.tolist() == [[5, 1, 0], [6, 0, 0], [7, 8, 9], [7, 8, 9]]
    assert out.response_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert out.log_probs[0].tolist() == [-0.5, -0.25, 0.0]
    assert out.finished.tolist() == [True, False, False, False]
    assert out.prompt_index.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="2 samples per prompt"):
        assemble_output([[([5], [-0.5])]], n=2, pad_token_id=0, stop_token_ids=[1])
