"""Frame-sharded video encoding: exact, each frame encoded once, gradients complete."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch

from longrl.vision.encode import (
    FramePiece,
    FrameSplitError,
    check_frame_local,
    split_frames,
)

from .dist_launch import run_workers

PATCH_ROW = 3 * 2 * 14 * 14  # channels x temporal patch x patch x patch


def qwen2_5_vl(kind: str):
    """The tiny kit's shape ("tiny": 2 blocks, last one full attention) or the real
    models' vision shape shrunk ("real": windowed blocks with full-attention blocks
    between them, window 112 px = 2x2 windows on a 224 px frame)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
    vision.update(
        {"depth": 2, "fullatt_block_indexes": [1], "window_size": 112}
        if kind == "tiny"
        else {"depth": 4, "fullatt_block_indexes": [1, 3], "window_size": 112}
    )
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
        },
        vision_config=vision,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
        },
        vision_config={"depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 64},
    )
    return Qwen2VLForConditionalGeneration(config).eval()


# Two videos of different frame sizes: 16x16 patches (224 px) and 8x12 patches.
GRIDS = [(5, 16, 16), (3, 8, 12)]


def video_pixels(grids=GRIDS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rows = sum(t * h * w for t, h, w in grids)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, PATCH_ROW, generator=generator), torch.tensor(grids)


def whole(model, pixels, grid) -> torch.Tensor:
    out = model.model.get_video_features(pixels, grid, return_dict=True)
    return torch.cat(tuple(out.pooler_output))


def _patches(piece: FramePiece, grids) -> int:
    return (piece.t_stop - piece.t_start) * grids[piece.video][1] * grids[piece.video][2]


def test_split_frames_is_contiguous_balanced_and_covers_every_group_once():
    grids = [(5, 16, 16), (3, 8, 12), (4, 8, 8)]
    for parts in (1, 2, 3, 4, 7):
        shares = split_frames(grids, parts)
        assert len(shares) == parts
        flat = [(p.video, t) for share in shares for p in share for t in range(p.t_start, p.t_stop)]
        assert flat == [(v, t) for v, (n, _, _) in enumerate(grids) for t in range(n)]
        loads = [sum(_patches(p, grids) for p in share) for share in shares]
        ideal = sum(t * h * w for t, h, w in grids) / parts
        biggest_group = max(h * w for _, h, w in grids)
        assert all(abs(load - ideal) <= biggest_group for load in loads), (parts, loads)
    assert split_frames([(4, 2, 2)], 2) == [[FramePiece(0, 0, 2)], [FramePiece(0, 2, 4)]]
    # More ranks than temporal groups: some ranks get nothing, none gets a group twice.
    assert [len(s) for s in split_frames([(2, 2, 2)], 4)].count(0) == 2


@pytest.mark.parametrize("kind", ["tiny", "real", "qwen2_vl"])
def test_encoding_sub_clips_equals_encoding_the_whole_video(kind):
    """The condition frame sharding rests on: no attention across temporal patch groups,
    in windowed and full-attention blocks alike. Checked on 224 px frames (several
    windows per frame) and every split into 2-4 shares."""
    from longrl.vision.encode import _encode_pieces

    model = qwen2_vl() if kind == "qwen2_vl" else qwen2_5_vl(kind)
    check_frame_local(model.model.visual)
    pixels, grid = video_pixels()
    with torch.no_grad():
        reference = whole(model, pixels, grid)
        for parts in (2, 3, 4):
            pieces = [
                _encode_pieces(model.model, pixels, GRIDS, share)
                for share in split_frames(GRIDS, parts)
            ]
            torch.testing.assert_close(torch.cat(pieces), reference, atol=1e-5, rtol=0)


def test_a_tower_not_known_to_be_frame_local_is_refused():
    class ClipAttentionTower(torch.nn.Module):
        pass

    with pytest.raises(FrameSplitError, match=r"ClipAttentionTower.*ulysses_sequence_parallel"):
        check_frame_local(ClipAttentionTower())


def _sharded_encoding() -> None:
    import torch.distributed as dist

    from longrl.parallel.mesh import init_parallel
    from longrl.vision.encode import FrameCounter, encode_videos

    ctx = init_parallel(sp=int(os.environ["WORLD_SIZE"]), timeout=timedelta(seconds=60))
    rank, world = ctx.rank, ctx.world_size
    model = qwen2_5_vl("real")
    pixels, grid = video_pixels()
    counter = FrameCounter(model.model.visual)
    with torch.no_grad():
        reference = whole(model, pixels, grid)
    counter.take()
    with torch.no_grad():
        embeds = encode_videos(model, pixels, grid, ctx.sp_group, num_chunks=3)
    assert [tuple(e.shape) for e in embeds] == [(5 * 64, 64), (3 * 24, 64)]
    torch.testing.assert_close(torch.cat(embeds), reference, atol=1e-5, rtol=0)

    # Counted: this rank's tower saw only its share of frames; the shares add up to
    # every frame once (2 frames per temporal patch group). Shares balance patches, so
    # with frames of two sizes the frame counts differ (equal sizes: 1/SP each).
    frames = torch.tensor([counter.take()])
    every = [torch.empty_like(frames) for _ in range(world)]
    dist.all_gather(every, frames)
    counts = [int(f) for f in every]
    assert sum(counts) == 2 * (5 + 3)
    expected = [2 * sum(p.t_stop - p.t_start for p in s) for s in split_frames(GRIDS, world)]
    assert counts == expected and all(counts)

    # One temporal group for several ranks: the others encode nothing and still gather.
    one_pixels, one_grid = video_pixels([(1, 8, 8)], seed=2)
    with torch.no_grad():
        (single,) = encode_videos(model, one_pixels, one_grid, ctx.sp_group)
        torch.testing.assert_close(single, whole(model, one_pixels, one_grid), atol=1e-5, rtol=0)

    # Gradients of a trainable tower: each rank's loss covers only its "sequence shard"
    # of the embeddings (as under Ulysses); summed over ranks they equal one process's.
    weight = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    rows = reference.shape[0]
    bounds = [rows * r // world for r in range(world + 1)]
    model.zero_grad()
    torch.cat(whole_with_grad(model, pixels, grid)).mul(weight).sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.model.visual.named_parameters()}
    model.zero_grad()
    gathered = torch.cat(encode_videos(model, pixels, grid, ctx.sp_group))
    mine = slice(bounds[rank], bounds[rank + 1])
    (gathered[mine] * weight[mine]).sum().backward()
    for name, param in model.model.visual.named_parameters():
        grad = param.grad.clone()
        dist.all_reduce(grad)
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def whole_with_grad(model, pixels, grid):
    return model.model.get_video_features(pixels, grid, return_dict=True).pooler_output


@pytest.mark.dist
@pytest.mark.parametrize("world", [2, 3])
def test_frames_split_across_sp_ranks_encode_once_and_match(world):
    run_workers(_sharded_encoding, world)
