"""The pure parts of the distributed trainer: shares, launch checks, the torchrun command."""

from __future__ import annotations

import argparse

import pytest

from longrl.config import load_config
from longrl.parallel.errors import ParallelConfigError
from longrl.train.distributed import _buckets, check_launch, dp_share


def test_dp_share_gives_each_replica_its_part_of_every_mini_batch():
    # 8 prompts, mini-batches of 4, 2 replicas: replica 0 gets 0,1 and 4,5.
    assert dp_share(8, 4, 2, 0) == [0, 1, 4, 5]
    assert dp_share(8, 4, 2, 1) == [2, 3, 6, 7]
    assert dp_share(8, 8, 4, 3) == [6, 7]
    assert dp_share(4, 4, 1, 0) == [0, 1, 2, 3]
    for count, mini, dp in [(12, 6, 3), (16, 4, 4), (6, 2, 2)]:
        shares = [dp_share(count, mini, dp, d) for d in range(dp)]
        assert sorted(p for share in shares for p in share) == list(range(count))
        assert len({len(share) for share in shares}) == 1


def _config(**overrides):
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def test_launch_checks_name_the_setting_to_change():
    check_launch(_config(), 1)
    check_launch(_config(**{"worker.actor.ulysses_sequence_parallel_size": 2}), 4)
    with pytest.raises(ParallelConfigError, match=r"2 x trainer.n_gpus_per_node=4 = 8 processes"):
        check_launch(_config(**{"trainer.nnodes": 2, "trainer.n_gpus_per_node": 4}), 4)
    with pytest.raises(ParallelConfigError, match="ulysses_sequence_parallel_size=4 must divide"):
        check_launch(_config(**{"worker.actor.ulysses_sequence_parallel_size": 4}), 6)
    with pytest.raises(ParallelConfigError, match=r"rollout\.name=vllm runs in one process"):
        check_launch(_config(**{"worker.rollout.name": "vllm"}), 2)
    with pytest.raises(ParallelConfigError, match=r"global_batch_size=2 .* over 4 data-parallel"):
        check_launch(
            _config(**{"data.rollout_batch_size": 4, "worker.actor.global_batch_size": 2}), 4
        )
    sharded_cache = _config(**{"worker.actor.fsdp.enable": "true", "data.cache_dir": "/tmp/c"})
    with pytest.raises(ParallelConfigError, match=r"data.cache_dir with worker.actor.fsdp"):
        check_launch(sharded_cache, 2)
    check_launch(sharded_cache, 1)  # one process shards nothing: the cache works as before


def test_gradient_buckets_keep_order_and_size():
    import torch

    params = [torch.nn.Parameter(torch.zeros(n)) for n in (3, 4, 10, 1, 2)]
    buckets = _buckets(params, 7)
    assert [[p.numel() for p in b] for b in buckets] == [[3, 4], [10], [1, 2]]
    assert [p for b in buckets for p in b] == params


def test_nproc_reruns_the_same_recipe_and_overrides_under_torchrun():
    from longrl.commands.rl import torchrun_command

    args = argparse.Namespace(recipe="r.yaml", overrides=["a.b=1", "c=2"], nproc=3)
    command = torchrun_command(args)
    assert command[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=3",
        "-m",
        "longrl.cli",
        "rl",
        "r.yaml",
        "a.b=1",
        "c=2",
    ]


def test_replica_zero_keeps_the_single_process_rollout_seed():
    from longrl.train.rl import rollout_seed

    config = _config()
    base = (config.trainer.seed * 1_000_003 + 3 * 1_009 + 1) % (2**63 - 1)
    assert rollout_seed(config, 3, 1) == rollout_seed(config, 3, 1, 0) == base
    assert len({rollout_seed(config, 3, 1, d) for d in range(8)}) == 8


def test_a_failed_collective_is_explained_and_other_errors_pass_unchanged():
    import torch

    from longrl.parallel.mesh import ParallelContext, ParallelLayout
    from longrl.train.distributed import DistributedRunError, TrainerParallel

    context = ParallelContext(ParallelLayout(2, 2), 3, 1, torch.device("cpu"), "gloo", None, None)
    parallel = TrainerParallel(context, owns_process_group=False, timeout_s=30)
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed")
    explained = parallel.explain(gloo)
    assert isinstance(explained, DistributedRunError)
    assert str(explained).startswith("rank 3/4 (dp 1/2, sp 2): a collective failed: [")
    assert "collective_timeout_s=30s" in str(explained)
    for other in (ValueError("bad row 3"), RuntimeError("judge: connection refused")):
        assert parallel.explain(other) is other
