"""Launching `longrl rl` as real processes: faults, `--nproc` (torchrun), two nodes.

Fault tests start each rank as its own `python -m longrl.cli rl` with the torchrun
environment set by hand (as `srun` on a cluster would, no torchrun agent to kill the
survivors): a rank that raises, is SIGKILLed or hangs must make every other rank
exit non-zero with a clear error, within trainer.collective_timeout_s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longrl.train.metrics import read_metrics

from .dist_launch import free_port
from .test_rl_dist import overrides, rl_inputs

FAULTY_REWARD = """
import os
import signal
import time

_calls = [0]


def faulty(responses, **columns):
    # Rank 1 fails from its second reward call on (step 2), after a whole step together.
    _calls[0] += 1
    if os.environ.get("RANK") == "1" and _calls[0] >= 2:
        with open({mark!r}, "w") as handle:
            handle.write(repr(time.time()))
        if {kind!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if {kind!r} == "hang":
            time.sleep(3600)
        raise RuntimeError("injected failure on rank 1")
    return [float(len(t) % 2) for t in responses]
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return rl_inputs(tmp_path_factory)


def fault_args(inputs: Path, tmp_path: Path, kind: str, timeout_s: float) -> list[str]:
    reward = tmp_path / f"faulty_{kind}.py"
    reward.write_text(FAULTY_REWARD.format(mark=str(tmp_path / "failed_at"), kind=kind))
    return overrides(
        inputs,
        tmp_path / "run",
        **{
            "worker.rollout.n": 2,
            "data.max_response_length": 6,
            "data.max_frames": 8,
            "trainer.max_steps": 3,
            "trainer.collective_timeout_s": timeout_s,
            "worker.reward.reward_function": f"{reward}:faulty",
            "worker.reward.on_error": "raise",
        },
    )


def environment(**extra: str) -> dict[str, str]:
    """This environment without launcher (torchrun, SLURM) variables, one thread, plus `extra`."""
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in launcher and not k.startswith(("TORCHELASTIC", "SLURM_"))
    }
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def start_ranks(args: list[str], world: int, logs: Path) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = environment(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "longrl.cli", "rl", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(logs / f"rank{rank}.err", "w"),  # noqa: SIM115 - closed with the process
            )
        )
    return procs


def wait_all(procs: list[subprocess.Popen], limit: float) -> list[float]:
    """Exit time of each process; kills everything left after `limit` seconds."""
    deadline = time.monotonic() + limit
    ended: dict[int, float] = {}
    while len(ended) < len(procs) and time.monotonic() < deadline:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.time()
        time.sleep(0.05)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return [ended.get(i, float("inf")) for i in range(len(procs))]


@pytest.mark.dist
@pytest.mark.parametrize("kind", ["kill", pytest.param("raise", marks=pytest.mark.slow)])
def test_a_killed_or_raising_rank_stops_every_rank_with_a_clear_error(inputs, tmp_path, kind):
    timeout_s = 30.0
    procs = start_ranks(fault_args(inputs, tmp_path, kind, timeout_s), 2, tmp_path)
    ended = wait_all(procs, limit=120)
    failed_at = float((tmp_path / "failed_at").read_text())
    codes = [p.returncode for p in procs]
    assert codes[1] == (-9 if kind == "kill" else 1)
    assert codes[0] == 1
    # The survivor notices at its next collective: far within the timeout.
    waited = ended[0] - failed_at
    print(f"{kind}: rank 0 exited {waited:.2f}s after rank 1 failed")
    assert waited < timeout_s
    survivor = (tmp_path / "rank0.err").read_text()
    assert "rank 0 failed: DistributedRunError: rank 0/2 (dp 0/2, sp 1): a collective failed" in (
        survivor
    )
    assert "Another rank probably crashed or was killed" in survivor
    if kind == "raise":
        assert "rank 1 failed: RewardError" in (tmp_path / "rank1.err").read_text()
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1]


@pytest.mark.dist
@pytest.mark.slow
def test_a_hanging_rank_times_the_others_out(inputs, tmp_path):
    timeout_s = 6.0
    procs = start_ranks(fault_args(inputs, tmp_path, "hang", timeout_s), 2, tmp_path)
    ended = wait_all(procs[:1], limit=120)
    procs[1].kill()
    procs[1].wait()
    hung_at = float((tmp_path / "failed_at").read_text())
    assert procs[0].returncode == 1
    waited = ended[0] - hung_at
    print(f"hang: rank 0 exited {waited:.2f}s after rank 1 hung (timeout {timeout_s}s)")
    # Rank 0 may have entered the collective before rank 1 hung: at most the timeout
    # plus the time to get there and exit.
    assert 0 < waited < timeout_s + 30
    survivor = (tmp_path / "rank0.err").read_text()
    assert "Timed out" in survivor and "collective_timeout_s=6s" in survivor


def torchrun_args(inputs: Path, out: Path, **extra) -> list[str]:
    return overrides(
        inputs,
        out,
        **{"worker.rollout.n": 2, "data.max_response_length": 6, "data.max_frames": 8, **extra},
    )


@pytest.mark.dist
@pytest.mark.slow
def test_nproc_runs_the_same_command_under_torchrun_with_sequence_parallelism(inputs, tmp_path):
    args = torchrun_args(
        inputs,
        tmp_path / "run",
        **{"trainer.max_steps": 1, "worker.actor.ulysses_sequence_parallel_size": 2},
    )
    done = subprocess.run(
        [sys.executable, "-m", "longrl.cli", "rl", *args, "--nproc", "2"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1/2 (dp 0/1, sp 2)" in done.stderr
    (row,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert row["actor/grad_norm"] > 0
    assert row["vision/frames_per_rank_max"] * 2 == row["vision/frames_encoded"]


@pytest.mark.dist
@pytest.mark.slow
def test_torchrun_stops_the_job_when_a_rank_is_killed(inputs, tmp_path):
    args = fault_args(inputs, tmp_path, "kill", 60.0)
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "longrl.cli", "rl", *args, "--nproc", "2"],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    failed_at = float((tmp_path / "failed_at").read_text())
    print(f"torchrun: exited {time.time() - failed_at:.2f}s after rank 1 was killed")
    assert done.returncode != 0
    assert time.time() - failed_at < 60 and failed_at > start
    assert "Signal 9 (SIGKILL)" in done.stderr or "exitcode  : -9" in done.stderr


@pytest.mark.dist
def test_two_launchers_as_two_nodes_over_loopback(inputs, tmp_path):
    """`torchrun --nnodes 2` twice on one machine, c10d rendezvous on 127.0.0.1."""
    args = torchrun_args(
        inputs,
        tmp_path / "run",
        **{"trainer.max_steps": 2, "trainer.nnodes": 2, "trainer.n_gpus_per_node": 1},
    )
    endpoint = f"127.0.0.1:{free_port()}"
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        "--rdzv-id=two-nodes",
        "-m",
        "longrl.cli",
        "rl",
        *args,
    ]
    nodes = [
        subprocess.Popen(
            launch,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / f"node{n}.err", "w"),  # noqa: SIM115
            text=True,
        )
        for n in range(2)
    ]
    ended = wait_all(nodes, limit=180)
    assert all(t < float("inf") for t in ended)
    logs = [(tmp_path / f"node{n}.err").read_text() for n in range(2)]
    assert [n.returncode for n in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    joined = logs[0] + logs[1]
    assert "rank 0/2 (dp 0/2, sp 1)" in joined and "rank 1/2 (dp 1/2, sp 1)" in joined
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["batch/groups"] == 2 for r in rows)


SRUN_SHIM = """#!/bin/bash
# Stand-in for srun on one machine: drop srun's options, run the task once.
while [[ "$1" == --* ]]; do shift; done
exec "$@"
"""
SCONTROL_SHIM = """#!/bin/bash
echo 127.0.0.1
"""


@pytest.mark.dist
@pytest.mark.slow
def test_slurm_script_launches_a_training_run(inputs, tmp_path):
    """scripts/slurm_longrl.sh with srun/scontrol stand-ins: one node, two processes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN_SHIM), ("scontrol", SCONTROL_SHIM)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm_longrl.sh"
    args = torchrun_args(inputs, tmp_path / "run", **{"trainer.max_steps": 1})
    env = environment(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SLURM_NNODES="1",
        SLURM_JOB_NODELIST="node001",
        SLURM_JOB_ID="4242",
        NPROC_PER_NODE="2",
        RDZV_PORT=str(free_port()),
        PYTHON=sys.executable,
    )
    done = subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "longrl: 1 nodes x 2 processes, rendezvous 127.0.0.1:" in done.stdout
    (row,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert row["batch/groups"] == 2


def test_slurm_script_needs_a_recipe_and_an_allocation(tmp_path):
    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm_longrl.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment())
    assert done.returncode == 2 and "usage: sbatch" in done.stderr
    done = subprocess.run(
        ["bash", str(script), "recipe.yaml"], capture_output=True, text=True, env=environment()
    )
    assert done.returncode != 0 and "run this through sbatch" in done.stderr
