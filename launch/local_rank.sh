#!/usr/bin/env bash
# Runs one rank of an MPI job with its own GPU: CUDA_VISIBLE_DEVICES is narrowed to entry
# LOCAL_RANK (mod the count) of the GPUs this node sees (Slurm's CUDA_VISIBLE_DEVICES list, else
# nvidia-smi's), so every rank of a node uses its device 0. Without GPUs it just runs the program.
# Used by launch/mpirun.sh and launch/slurm/common.sh:  local_rank.sh PROGRAM [ARGS...]
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-0}}  # mpirun's first: its daemons inherit srun's SLURM_LOCALID
gpus=()
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" && "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]]; then
  IFS=, read -ra gpus <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
  n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  ((n > 0)) && gpus=($(seq 0 $((n - 1))))
fi
if ((${#gpus[@]})); then
  export CUDA_VISIBLE_DEVICES=${gpus[local_rank % ${#gpus[@]}]}
  echo "[launch] $(hostname -s) local rank $local_rank: GPU $CUDA_VISIBLE_DEVICES of ${#gpus[@]}" >&2
fi
exec "$@"
