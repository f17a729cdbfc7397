"""Chunked all-gather equals one all-gather, for uneven sizes, in bounded steps."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch

from longrl.parallel.errors import ParallelConfigError
from longrl.parallel.gather import plan_gather

from .dist_launch import run_workers

ROWS = (5, 0, 3, 8)  # rank r holds ROWS[r] rows; rank 1 holds none


def _piece(rank: int, dtype: torch.dtype) -> torch.Tensor:
    values = torch.arange(ROWS[rank] * 3 * 4).view(ROWS[rank], 3, 4) + 1000 * rank
    return values.to(dtype)


def _uneven_gathers(world: int) -> None:
    from longrl.parallel.gather import chunked_all_gather
    from longrl.parallel.mesh import init_parallel
    from longrl.parallel.sequence import gather_sequence

    ctx = init_parallel(sp=world, timeout=timedelta(seconds=30))
    for dtype in (torch.float32, torch.int64, torch.bfloat16):
        mine = _piece(ctx.rank, dtype)
        expected = torch.cat([_piece(r, dtype) for r in range(world)])
        # The plain one-shot gather (padded all_gather) gives the same result.
        sizes = list(ROWS[:world])
        assert torch.equal(gather_sequence(mine, 0, ctx.sp_group, sizes=sizes), expected)
        row_bytes = 3 * 4 * mine.element_size()
        for options in (
            {},
            {"num_chunks": 1},
            {"num_chunks": 3},
            {"num_chunks": 100},
            {"max_chunk_bytes": 1},
            {"max_chunk_bytes": 2 * row_bytes},
            {"max_chunk_bytes": 10**9},
        ):
            got = chunked_all_gather(mine, ctx.sp_group, **options)
            assert got.dtype == dtype and torch.equal(got, expected), options
    # Ranks disagreeing on the row shape get the same clear error (no hang).
    wrong = torch.zeros(2, 3, 4 + (ctx.rank == 0))
    with pytest.raises(ParallelConfigError, match="disagree on dims/dtype/row shape"):
        chunked_all_gather(wrong, ctx.sp_group, num_chunks=2)


@pytest.mark.dist
@pytest.mark.parametrize("world", [2, 4])
def test_chunked_all_gather_equals_all_gather_for_uneven_sizes(world):
    run_workers(_uneven_gathers, world, world)


def test_plan_bounds_the_rows_moved_per_step():
    plan = plan_gather([5, 0, 3, 8], row_bytes=48, num_chunks=3)
    assert (plan.rows_per_step, plan.steps, plan.offsets) == (3, 3, (0, 5, 5, 8))
    # 100 bytes per rank per step holds 2 rows of 48 bytes.
    plan = plan_gather([5, 0, 3, 8], row_bytes=48, max_chunk_bytes=100)
    assert (plan.rows_per_step, plan.steps) == (2, 4)
    # A row larger than the byte budget still moves, one per step.
    assert plan_gather([4], row_bytes=48, max_chunk_bytes=10).rows_per_step == 1
    # No option: one step with the largest piece (a plain all-gather).
    assert (plan_gather([5, 8], row_bytes=4).rows_per_step, plan_gather([5, 8], 4).steps) == (8, 1)
    # More chunks than rows: one row per step, never zero.
    assert plan_gather([2, 1], row_bytes=4, num_chunks=10).rows_per_step == 1
    assert plan_gather([0, 0], row_bytes=4, num_chunks=2).steps == 0
    with pytest.raises(ParallelConfigError, match="not both"):
        plan_gather([1], 4, num_chunks=2, max_chunk_bytes=8)
    with pytest.raises(ParallelConfigError, match="num_chunks must be >= 1"):
        plan_gather([1], 4, num_chunks=0)
