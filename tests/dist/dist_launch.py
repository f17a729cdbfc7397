"""Run a function on N local gloo processes (127.0.0.1), as torchrun would.

Workers are forked from a forkserver that has imported torch and transformers
once per test session, so each test pays milliseconds, not seconds, of startup
(a spawned worker spends ~5-10 s importing on a 2-core machine).

Each worker gets the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and one thread. An exception in any worker fails the
caller with that worker's traceback (the others are terminated); a worker that
does not finish within `timeout` seconds fails it too, so a deadlock never hangs
the test suite.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

import torch.multiprocessing as mp

_PRELOAD = [
    "torch",
    "torch.distributed",
    "transformers",
    "transformers.models.qwen2.modeling_qwen2",
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
    "longrl.parallel.sp_model",
    "longrl.parallel.gather",
    "longrl.train.logprobs",
    "tests.dist.dist_launch",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(local_rank: int, fn, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_workers(fn, world_size: int, *args, timeout: float = 90.0) -> None:
    """Call `fn(*args)` in `world_size` spawned processes; raise if any fails or hangs."""
    # One thread per worker on a 2-core machine (the forkserver inherits this on its start).
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        # Takes effect when the forkserver starts (the first call of the session).
        multiprocessing.set_forkserver_preload(_PRELOAD)
        context = mp.start_processes(
            _entry,
            args=(fn, world_size, free_port(), args),
            nprocs=world_size,
            join=False,
            start_method="forkserver",
        )
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise TimeoutError(f"{world_size} workers running {fn.__name__} took over {timeout}s")
