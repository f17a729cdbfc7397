#!/bin/bash
# longrl RL training on a SLURM cluster: one torchrun agent per node, which starts
# NPROC_PER_NODE training processes; the agents meet through a c10d rendezvous on
# the first node of the allocation.
#
#   sbatch --nodes=2 scripts/slurm_longrl.sh configs/qwen2_5_vl_3b_video_grpo.yaml \
#       worker.actor.ulysses_sequence_parallel_size=4 trainer.output_dir=/shared/runs/grpo
#
# Environment knobs: NPROC_PER_NODE (default: GPUs per node, else 1), RDZV_PORT
# (default 29500), PYTHON (default: python of the active environment).
# trainer.output_dir must be on a filesystem every node sees (rank 0 writes
# checkpoints, every rank reads them on resume).
#
#SBATCH --job-name=longrl-rl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: sbatch [--nodes=N] $0 RECIPE [key=value ...]" >&2
    exit 2
fi
RECIPE=$1
shift

NNODES=${SLURM_NNODES:?run this through sbatch (SLURM_NNODES is not set)}
NPROC_PER_NODE=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RDZV_PORT=${RDZV_PORT:-29500}
PYTHON=${PYTHON:-python}

# One thread per process unless told otherwise (CPU nodes: processes x threads <= cores).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

echo "longrl: ${NNODES} nodes x ${NPROC_PER_NODE} processes, rendezvous ${HEAD_NODE}:${RDZV_PORT}"

# --kill-on-bad-exit: if one node's agent fails, SLURM stops the others at once
# (longrl's collective timeout, trainer.collective_timeout_s, is the backstop).
srun --kill-on-bad-exit=1 --ntasks-per-node=1 \
    "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --nproc-per-node="$NPROC_PER_NODE" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="${HEAD_NODE}:${RDZV_PORT}" \
    --rdzv-id="${SLURM_JOB_ID:-longrl}" \
    -m longrl.cli rl "$RECIPE" \
    trainer.nnodes="$NNODES" \
    trainer.n_gpus_per_node="$NPROC_PER_NODE" \
    "$@"
