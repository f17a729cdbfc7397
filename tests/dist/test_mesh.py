"""dp x sp process groups from the torchrun environment, collective timeouts, layout errors."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.mesh import ParallelLayout

from .dist_launch import run_workers
from .sp_fixtures import left_padded, next_token_log_probs, random_rows, tiny_qwen2


def _members(group) -> list[int]:
    mine = torch.tensor([dist.get_rank()])
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(everyone, mine, group=group)
    return [int(t) for t in everyone]


def _dp2_sp2() -> None:
    from longrl.parallel.mesh import init_parallel
    from longrl.parallel.sp_model import SequenceParallelLM
    from longrl.rollout.engine import text_position_ids

    ctx = init_parallel(sp=2, timeout=timedelta(seconds=30))
    assert ctx.layout == ParallelLayout(dp=2, sp=2)
    assert (ctx.dp_rank, ctx.sp_rank) == divmod(ctx.rank, 2)
    assert _members(ctx.sp_group) == ctx.layout.sp_group_ranks(ctx.dp_rank)
    assert _members(ctx.dp_group) == ctx.layout.dp_group_ranks(ctx.sp_rank)
    mesh = ctx.device_mesh()
    assert mesh.mesh_dim_names == ("dp", "sp")
    assert (mesh.get_local_rank("dp"), mesh.get_local_rank("sp")) == (ctx.dp_rank, ctx.sp_rank)

    # Each data-parallel replica runs its own batch under sequence parallelism.
    ids, mask = left_padded(random_rows([7, 4], seed=ctx.dp_rank))
    positions = text_position_ids(mask)
    parallel = SequenceParallelLM(tiny_qwen2(), ctx.sp_group)
    with torch.no_grad():
        got = parallel(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        expected = tiny_qwen2()(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(
        next_token_log_probs(got, ids, mask),
        next_token_log_probs(expected, ids, mask),
        atol=1e-5,
        rtol=0,
    )
    # Replicas really held different batches (else the dp split would be untested).
    first_ids = [torch.empty_like(ids) for _ in range(2)]
    dist.all_gather(first_ids, ids, group=ctx.dp_group)
    assert not torch.equal(first_ids[0], first_ids[1])


def _clear_errors_on_every_rank() -> None:
    from longrl.parallel.mesh import init_parallel
    from longrl.parallel.sp_model import SequenceParallelLM
    from longrl.rollout.engine import text_position_ids

    ctx = init_parallel(sp=4, timeout=timedelta(seconds=30))
    with pytest.raises(
        ParallelConfigError, match=r"num_attention_heads=6 is not divisible by sp=4"
    ):
        SequenceParallelLM(tiny_qwen2(heads=6, kv_heads=2), ctx.sp_group)
    # Every rank raised before any collective: the group is still usable.
    total = torch.ones(1)
    dist.all_reduce(total, group=ctx.sp_group)
    assert int(total) == 4
    # SP ranks given different batches (e.g. unsynchronised sampling): an error, not a hang.
    ids, mask = left_padded(random_rows([6, 3], seed=ctx.rank % 2))
    parallel = SequenceParallelLM(tiny_qwen2(), ctx.sp_group)
    with pytest.raises(ParallelConfigError, match="given different inputs"):
        parallel(input_ids=ids, attention_mask=mask, position_ids=text_position_ids(mask))


def _timeout_raises() -> None:
    from longrl.parallel.mesh import init_parallel

    ctx = init_parallel(sp=2, timeout=timedelta(seconds=2))
    if ctx.rank == 0:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"[Tt]imed out"):
            dist.all_reduce(torch.ones(1), group=ctx.sp_group)  # rank 1 never joins
        assert time.monotonic() - start < 15
    else:
        time.sleep(4)


@pytest.mark.dist
def test_dp2_sp2_groups_mesh_and_per_replica_sequence_parallel_forward():
    run_workers(_dp2_sp2, 4)


@pytest.mark.dist
def test_heads_not_divisible_and_mismatched_inputs_are_clear_errors_on_every_rank():
    run_workers(_clear_errors_on_every_rank, 4)


@pytest.mark.dist
def test_collective_timeout_raises_instead_of_hanging():
    run_workers(_timeout_raises, 2)


def test_layout_arithmetic_and_errors():
    layout = ParallelLayout.for_world(8, sp=4)
    assert (layout.dp, layout.sp, layout.world_size) == (2, 4, 8)
    assert layout.coordinates(6) == (1, 2)
    assert layout.sp_group_ranks(1) == [4, 5, 6, 7]
    assert layout.dp_group_ranks(2) == [2, 6]
    with pytest.raises(ParallelConfigError, match="sp=3 must divide the world size 8"):
        ParallelLayout.for_world(8, sp=3)
    with pytest.raises(ParallelConfigError, match=r"ParallelLayout\.sp"):
        ParallelLayout(dp=1, sp=0)


def test_single_process_without_torchrun_is_a_world_of_one(monkeypatch):
    from longrl.parallel.mesh import destroy_parallel, init_parallel

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_initialized()
    try:
        ctx = init_parallel(timeout=timedelta(seconds=5))
        assert (ctx.world_size, ctx.rank, ctx.layout) == (1, 0, ParallelLayout(1, 1))
        assert dist.get_world_size(ctx.sp_group) == 1
    finally:
        destroy_parallel()


def test_incomplete_torchrun_environment_names_the_missing_variables(monkeypatch):
    from longrl.parallel.mesh import init_parallel

    monkeypatch.setenv("RANK", "0")
    for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ParallelConfigError, match="WORLD_SIZE, MASTER_ADDR, MASTER_PORT unset"):
        init_parallel()
    assert not dist.is_initialized()
