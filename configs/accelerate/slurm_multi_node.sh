#!/bin/bash
# SLURM example: 2 nodes x 8 GPUs, one `accelerate launch` per node (it starts the 8 local ranks).
#   sbatch configs/accelerate/slurm_multi_node.sh cxrvlp.cxrclip.train cxrclip_r50 data.root=/data/mimic-cxr-jpg
# Everything after the module name is passed to the training entry point (CONFIG key=value ...).
#SBATCH --job-name=cxrvlp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
set -euo pipefail

MODULE=${1:?usage: sbatch slurm_multi_node.sh cxrvlp.<method>.train CONFIG [key=value ...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# one output folder for the whole job (rank 0 writes it; it must be on a file system every node sees)
OUT=${OUT:-runs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / GPUS_PER_NODE ))

# \$SLURM_NODEID must be expanded on each node, hence the single quotes around the srun command
srun --kill-on-bad-exit=1 bash -c '
accelerate launch \
    --config_file configs/accelerate/multi_node.yaml \
    --num_machines "$SLURM_NNODES" \
    --num_processes $(( SLURM_NNODES * '"$GPUS_PER_NODE"' )) \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip '"$MAIN_IP"' \
    --main_process_port 29500 \
    -m '"$MODULE"' "$@" output_dir='"$OUT"'
' bash "$@"
