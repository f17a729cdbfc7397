"""FSDP2 building blocks on 2 gloo processes: shards, gathered phases, the stand-in tower
call, full state dicts. Each sharded model is compared with the same model unsharded."""

from __future__ import annotations

import math
import os
from datetime import timedelta

import pytest
import torch

from .dist_launch import run_workers


def _tiny(seed: int = 0):
    from longrl.models.tiny import build_tiny_model, train_tiny_tokenizer

    return build_tiny_model("qwen2_5_vl", train_tiny_tokenizer(vocab_size=512), seed=seed)


def _start(sp: int = 1):
    from longrl.parallel.mesh import init_parallel

    return init_parallel(sp=sp, timeout=timedelta(seconds=60))


def _sharded(seed: int = 0, trainable_vision: bool = False):
    from longrl.parallel.fsdp import shard_model, world_mesh

    model = _tiny(seed)
    model.model.visual.requires_grad_(trainable_vision)
    shard_model(model, world_mesh("cpu"))
    return model


def _tokens(seed: int) -> torch.Tensor:
    return torch.randint(3, 400, (2, 10), generator=torch.Generator().manual_seed(seed))


def _log_likelihood(model, ids: torch.Tensor) -> torch.Tensor:
    """As the trainer calls the model: embeddings built outside it, explicit 3-D positions."""
    positions = torch.arange(ids.shape[1])[None, None].expand(3, *ids.shape)
    embeds = model.get_input_embeddings()(ids)
    logits = model(inputs_embeds=embeds, position_ids=positions).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).sum()


def _full_grad(param: torch.Tensor) -> torch.Tensor:
    from longrl.parallel.fsdp_state import full_tensor

    return full_tensor(param.grad)


def _sum_over_ranks(value: float) -> float:
    import torch.distributed as dist

    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total)


def _shards_are_pieces() -> None:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from longrl.config.worker import OptimConfig
    from longrl.train.optim import build_optimizer

    ctx = _start()
    world = ctx.world_size
    plain, model = _tiny(), _sharded()
    lm = model.model.language_model
    units = [*lm.layers, model.model.visual, lm.embed_tokens, model]
    assert all(isinstance(unit, FSDPModule) for unit in units)
    assert model.lm_head.weight is lm.embed_tokens.weight  # still tied, one shard
    total = sum(p.numel() for p in plain.parameters())
    local = 0
    for (name, param), original in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert isinstance(param, DTensor) and param.shape == original.shape, name
        # Dim-0 chunks as torch.chunk cuts them: ceil(rows / world) rows, the last shorter.
        rows, chunk = original.shape[0], math.ceil(original.shape[0] / world)
        assert param.to_local().shape[0] == max(0, min(chunk, rows - ctx.rank * chunk)), name
        local += param.to_local().numel()
    # Every element on exactly one rank, each rank about 1/world of the model.
    assert _sum_over_ranks(local) == total
    assert local <= total / world * 1.05, (local, total)

    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    _log_likelihood(model, _tokens(ctx.rank)).backward()
    optimizer.step()
    state_numel = sum(
        value.to_local().numel()
        for values in optimizer.state.values()
        for value in values.values()
        if isinstance(value, DTensor)
    )
    trainable = sum(p.to_local().numel() for p in model.parameters() if p.requires_grad)
    assert state_numel == 2 * trainable  # AdamW's two moments, on this rank's shards only


def _gathered_forwards_any_number_of_times() -> None:
    from torch.distributed.tensor import DTensor

    from longrl.parallel.fsdp import gathered

    ctx = _start()
    plain, model = _tiny(), _sharded()
    ids = _tokens(0)
    with torch.no_grad():
        expected = _log_likelihood(plain, ids)
        with gathered(model):
            # Replicas decode different lengths: here rank r calls the model r + 2 times.
            for _ in range(ctx.rank + 2):
                torch.testing.assert_close(_log_likelihood(model, ids), expected)
    layer = model.model.language_model.layers[0].mlp.up_proj.weight
    assert isinstance(layer, DTensor) and layer.to_local().shape[0] < layer.shape[0]
    # Sharded again: a training forward/backward equals the whole model's.
    _log_likelihood(model, ids).backward()
    _log_likelihood(plain, ids).backward()
    for (name, param), original in zip(model.named_parameters(), plain.parameters(), strict=True):
        if original.grad is not None:
            # Gradients are summed over ranks (both ranks ran the same batch here).
            torch.testing.assert_close(_full_grad(param), 2 * original.grad, msg=name)


def _ids_loss(model, ids: torch.Tensor, pieces: int) -> torch.Tensor:
    """Log-likelihood with the ids embedded in `pieces` calls before the model."""
    positions = torch.arange(ids.shape[1])[None, None].expand(3, *ids.shape)
    parts = [model.get_input_embeddings()(part) for part in ids.chunk(pieces, dim=1)]
    logits = model(inputs_embeds=torch.cat(parts, dim=1), position_ids=positions).logits
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).sum()


def _embedding_called_once_or_twice_before_the_model() -> None:
    """The embedding unit runs before the model (the trainer embeds every prompt itself
    under FSDP: `prompt_batch`), once or in pieces (the naive log-prob path embeds prompt
    and responses apart): a replica doing either pairs with the others."""
    ctx = _start()
    plain, model = _tiny(), _sharded()
    for first, second in ((1, 2), (2, 1), (1, 1)):
        model.zero_grad()
        plain.zero_grad()
        outside = first if ctx.rank == 0 else second
        _ids_loss(model, _tokens(ctx.rank), outside).backward()
        (_ids_loss(plain, _tokens(0), first) + _ids_loss(plain, _tokens(1), second)).backward()
        for (name, param), original in zip(
            model.named_parameters(), plain.parameters(), strict=True
        ):
            if original.grad is not None:
                torch.testing.assert_close(
                    _full_grad(param), original.grad, atol=1e-5, rtol=1e-4, msg=name
                )


def _tower_calls_match_on_ranks_without_frames() -> None:
    import torch.distributed as dist

    from longrl.train.timing import VisionCounter
    from longrl.vision.encode import FrameCounter, encode_videos, split_frames
    from longrl.vision.placeholder import placeholder_embeddings

    ctx = _start(sp=int(os.environ["WORLD_SIZE"]))
    plain, model = _tiny(), _sharded(trainable_vision=True)
    plain.model.visual.requires_grad_(True)
    frames, calls = FrameCounter(model.model.visual), VisionCounter(model.model.visual)
    # One temporal patch group (2 frames of 4x4 patches): one rank has no frames to encode.
    pixels = torch.randn(16, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(3))
    grid = torch.tensor([[1, 4, 4]])
    encodes = bool(split_frames([(1, 4, 4)], ctx.world_size)[ctx.rank])
    assert _sum_over_ranks(float(encodes)) == 1.0
    (embeds,) = encode_videos(model, pixels, grid, ctx.sp_group)
    expected = plain.model.get_video_features(pixels, grid, return_dict=True).pooler_output[0]
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=0)
    # The stand-in call on the empty rank is not counted.
    assert frames.take() == (2 if encodes else 0)
    assert calls.take()["vision/encode_calls"] == (1.0 if encodes else 0.0)
    # Each rank's loss covers its half of the rows (as a sequence shard would).
    weight = torch.randn(expected.shape, generator=torch.Generator().manual_seed(4))
    half = slice(0, 2) if ctx.rank == 0 else slice(2, 4)
    (embeds[half] * weight[half]).sum().backward()
    (expected * weight).sum().backward()
    for (name, param), original in zip(
        model.model.visual.named_parameters(), plain.model.visual.parameters(), strict=True
    ):
        torch.testing.assert_close(_full_grad(param), original.grad, atol=1e-5, rtol=1e-4, msg=name)

    # A micro-batch without video on rank 1 only: the stand-in keeps the tower in step.
    model.zero_grad()
    if ctx.rank == 0:
        (out,) = encode_videos(model, pixels, grid, None)
        loss = out.sum()
    else:
        loss = 0.0 * placeholder_embeddings(model.model).sum()
    loss.backward()
    plain.zero_grad()
    plain.model.get_video_features(pixels, grid, return_dict=True).pooler_output[0].sum().backward()
    for (name, param), original in zip(
        model.model.visual.named_parameters(), plain.model.visual.parameters(), strict=True
    ):
        torch.testing.assert_close(_full_grad(param), original.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert frames.take() == (2 if ctx.rank == 0 else 0)
    dist.barrier()


def _full_state_round_trip() -> None:
    from torch.distributed.tensor import DTensor

    from longrl.config.worker import OptimConfig
    from longrl.parallel.fsdp_state import (
        full_model_state,
        full_optimizer_state,
        sharded_optimizer_state,
    )
    from longrl.train.checkpoint import load_model_state, model_state
    from longrl.train.optim import build_optimizer

    ctx = _start()
    main = ctx.rank == 0
    plain, model = _tiny(), _sharded()
    full = full_model_state(model, keep=main)
    if main:
        expected = model_state(plain)
        assert full.keys() == expected.keys()  # tied head saved once, as unsharded
        assert all(torch.equal(full[k], expected[k]) for k in expected)
    else:
        assert full is None
    # Load every rank's copy of the same file into a differently initialised sharded model.
    everything = model_state(plain)
    other = _sharded(seed=1)
    load_model_state(other, everything, source="test")
    for (name, mine), theirs in zip(other.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(mine.to_local(), theirs.to_local()), name

    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    _log_likelihood(model, _tokens(ctx.rank)).backward()
    optimizer.step()
    saved = full_optimizer_state(optimizer, keep=True)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in saved["state"].items():
        assert values["exp_avg"].shape == params[index].shape
        assert not isinstance(values["exp_avg"], DTensor)
    fresh = build_optimizer(model, OptimConfig(lr=1e-3))
    fresh.load_state_dict(sharded_optimizer_state(fresh, saved))
    for index, values in optimizer.state_dict()["state"].items():
        loaded = fresh.state_dict()["state"][index]
        assert torch.equal(loaded["exp_avg_sq"].to_local(), values["exp_avg_sq"].to_local())
        assert float(loaded["step"]) == float(values["step"]) == 1.0


@pytest.mark.dist
@pytest.mark.parametrize(
    "check",
    [
        _shards_are_pieces,
        _gathered_forwards_any_number_of_times,
        _embedding_called_once_or_twice_before_the_model,
        _tower_calls_match_on_ranks_without_frames,
        _full_state_round_trip,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_fsdp_on_two_ranks(check):
    run_workers(check, 2)
