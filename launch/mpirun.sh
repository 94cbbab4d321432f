#!/usr/bin/env bash
# mpirun for a workstation: W ranks with T intra-op threads each, bound to cores.
#   launch/mpirun.sh -n 2 [-t THREADS] [-b core|none] [--dry-run] PROGRAM [ARGS...]
# e.g. launch/mpirun.sh -n 2 build/bin/diffusion-train --config configs/toy_2d.ini
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: launch/mpirun.sh -n RANKS [-t THREADS] [-b core|none] [--dry-run] PROGRAM [ARGS...]
  -n RANKS     MPI ranks (processes)
  -t THREADS   intra-op threads per rank: sets OMP_NUM_THREADS and appends --threads THREADS
               to the program's arguments unless they already contain --threads (or --jobs)
               (default: cores / RANKS, at least 1)
  -b BINDING   core (default): each rank bound to its own THREADS cores (to one core when
               RANKS*THREADS exceeds the cores); none: no binding
  --dry-run    print the mpirun command instead of running it
Adds --allow-run-as-root only when run as root and --oversubscribe only when RANKS exceeds
the cores (binding is then off). Each rank runs through launch/local_rank.sh: with several
GPUs, local rank r sees only GPU r (CUDA_VISIBLE_DEVICES). Other mpirun options: set
OMPI_MCA_* in the environment.
USAGE
}

ranks="" threads="" binding=core dry=0
while (($#)); do
  case "$1" in
    -n|--ranks) ranks="${2:?-n needs a value}"; shift 2 ;;
    -t|--threads) threads="${2:?-t needs a value}"; shift 2 ;;
    -b|--bind) binding="${2:?-b needs a value}"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "launch/mpirun.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
(($#)) || { usage >&2; exit 2; }
[[ "$ranks" =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: -n RANKS must be a positive integer, got '$ranks'" >&2; exit 2; }
[[ "$binding" == core || "$binding" == none ]] || { echo "launch/mpirun.sh: -b must be core or none, got '$binding'" >&2; exit 2; }

# Physical cores (what Open MPI binds to), not hardware threads.
cores=$(lscpu -p=SOCKET,CORE 2>/dev/null | grep -v '^#' | sort -u | wc -l)
((cores > 0)) || cores=$(nproc)
[ -n "$threads" ] || threads=$((cores / ranks > 0 ? cores / ranks : 1))
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: -t THREADS must be a positive integer, got '$threads'" >&2; exit 2; }

cmd=(mpirun -np "$ranks" -x OMP_NUM_THREADS="$threads")
[ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
if ((ranks > cores)); then
  cmd+=(--oversubscribe --bind-to none)
elif [ "$binding" = none ]; then
  cmd+=(--bind-to none)
elif ((ranks * threads <= cores)); then
  cmd+=(--map-by "slot:PE=$threads" --bind-to core)
else
  echo "launch/mpirun.sh: $ranks ranks x $threads threads > $cores cores: one core per rank" >&2
  cmd+=(--bind-to core)
fi

prog=("$@")
has_threads=0
# A jobs file (diffusion-sample --jobs) holds every option, threads included, per job.
for a in "${prog[@]:1}"; do [[ "$a" == --threads || "$a" == --threads=* || "$a" == --jobs || "$a" == --jobs=* ]] && has_threads=1; done
((has_threads)) || prog+=(--threads "$threads")
# Each rank starts through local_rank.sh, which gives it its own GPU on a multi-GPU machine.
prog=("$(cd "$(dirname "$0")" && pwd)/local_rank.sh" "${prog[@]}")

if ((dry)); then echo "${cmd[*]} ${prog[*]}"; exit 0; fi
exec "${cmd[@]}" "${prog[@]}"
