# Shared logic of the batch scripts in launch/slurm/ (sourced, not run): start the program on
# every task of the allocation with the chosen launcher, one GPU per local rank, forward the
# warning signal, and requeue the job when asked. See docs/launch.md.
#
# Settings (environment variables; sbatch passes the submitting shell's environment):
#   LAUNCHER=srun     srun --mpi=pmix (default): Slurm starts, places, signals and cleans up every
#                     rank itself and ranks see SLURM_LOCALID. LAUNCHER=mpirun: Open MPI's mpirun
#                     inside the allocation (for a Slurm without the PMIx plugin). Never
#                     srun --mpi=pmi2: Debian's Open MPI speaks PMIx only.
#   RESUBMIT=1        after the warning signal (--signal=B:USR1@T before the time limit or a
#                     preemption) and the program's clean stop, `scontrol requeue` the job; the
#                     requeued job runs the same command, which resumes. 0 (default): just stop.
#   THREADS=N         intra-op threads per rank (OMP_NUM_THREADS and --threads); default
#                     SLURM_CPUS_PER_TASK, else 1.
#   DIFFUSION_BIN     folder of the programs; default DIFFUSION_ROOT/build/bin.
#   SRUN_ARGS, MPIRUN_ARGS   extra launcher options (word-split).

set -uo pipefail

: "${LAUNCHER:=srun}"
: "${RESUBMIT:=0}"
: "${THREADS:=${SLURM_CPUS_PER_TASK:-1}}"
DIFFUSION_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${DIFFUSION_BIN:=$DIFFUSION_ROOT/build/bin}"
export OMP_NUM_THREADS="$THREADS"

slurm_log() { echo "[slurm] $(date +%H:%M:%S) $*"; }
slurm_die() { echo "[slurm] error: $*" >&2; exit 2; }

[ -n "${SLURM_JOB_ID:-}" ] || slurm_die "not inside a Slurm job; submit with sbatch"
[[ "$RESUBMIT" == 0 || "$RESUBMIT" == 1 ]] || slurm_die "RESUBMIT must be 0 or 1, got '$RESUBMIT'"
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || slurm_die "THREADS must be a positive integer, got '$THREADS'"

_slurm_launcher_pid=""
_slurm_warned=0
_slurm_signals=0

# Forwards a signal the batch shell caught to the launcher, which passes it on to every rank
# (mpirun does so itself; srun forwards signals to its tasks too). Ranks launched by srun may
# also get it directly (--signal without B:, scancel --full): the programs treat a repeat as one.
_slurm_forward() {
  _slurm_signals=$((_slurm_signals + 1))
  [ "$1" = USR1 ] && _slurm_warned=1
  slurm_log "got SIG$1: forwarding it to the ranks (launcher pid $_slurm_launcher_pid)"
  [ -n "$_slurm_launcher_pid" ] && kill -s "$1" "$_slurm_launcher_pid" 2>/dev/null
}
# From here on: a warning that comes before the launcher starts must not kill the shell.
trap '_slurm_forward USR1' USR1
trap '_slurm_forward TERM' TERM

# Prints the job's layout, one line per node: its host, its ranks (both launchers place ranks
# in blocks, node by node, in the node list's order), threads per rank and the GPUs a node
# offers (read on the batch node; each rank logs the GPU it takes, with its host, from
# launch/local_rank.sh).
slurm_layout() {
  local hosts=() counts=() parts=() part i n first=0 gpus
  mapfile -t hosts < <(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname -s)}" 2>/dev/null)
  ((${#hosts[@]})) || hosts=("$(hostname -s)")
  # SLURM_TASKS_PER_NODE looks like "2(x3),1": 2 tasks on each of 3 nodes, then 1.
  IFS=, read -ra parts <<<"${SLURM_TASKS_PER_NODE:-${SLURM_NTASKS:-1}}"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
      for ((i = 0; i < BASH_REMATCH[2]; i++)); do counts+=("${BASH_REMATCH[1]}"); done
    else
      counts+=("$part")
    fi
  done
  gpus="${CUDA_VISIBLE_DEVICES:-none}"
  [ "$gpus" = NoDevFiles ] && gpus=none
  for i in "${!hosts[@]}"; do
    n=${counts[i]:-0}
    slurm_log "node ${hosts[i]}: ranks $first-$((first + n - 1)) ($n), $THREADS thread(s) each, GPUs ${gpus}"
    first=$((first + n))
  done
}

# slurm_run [--no-threads-option] PROGRAM [ARGS...]: runs `PROGRAM ARGS --threads THREADS`
# (without --threads when asked; OMP_NUM_THREADS is set either way) on every task of the
# allocation, waits, then requeues (RESUBMIT=1 after a warning) or exits with its status.
slurm_run() {
  local threads_option=(--threads "$THREADS")
  [ "$1" = --no-threads-option ] && { threads_option=(); shift; }
  local program="$1"; shift
  [[ "$program" == */* ]] || program="$DIFFUSION_BIN/$program"
  [ -x "$program" ] || slurm_die "$program is not an executable (build first, or set DIFFUSION_BIN)"
  local cmd=()
  case "$LAUNCHER" in
    srun)
      # Slurm 22.11 and later do not pass the batch job's --cpus-per-task on to srun: say it.
      cmd=(srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task="$THREADS" ${SRUN_ARGS:-}) ;;
    mpirun)
      # Without -np mpirun starts one rank per task of the allocation, across its nodes.
      cmd=(mpirun -x OMP_NUM_THREADS ${MPIRUN_ARGS:-})
      [ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
      ((THREADS > 1)) && cmd+=(--map-by "slot:PE=$THREADS" --bind-to core) ;;
    *) slurm_die "LAUNCHER must be srun or mpirun, got '$LAUNCHER'" ;;
  esac
  cmd+=("$DIFFUSION_ROOT/launch/local_rank.sh" "$program" "$@" "${threads_option[@]}")

  slurm_log "job ${SLURM_JOB_ID}${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)}, start $(( ${SLURM_RESTART_COUNT:-0} + 1 )), ${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-}, ${SLURM_NTASKS:-1} rank(s) x $THREADS thread(s), launcher $LAUNCHER, RESUBMIT=$RESUBMIT"
  slurm_layout
  slurm_log "${cmd[*]}"
  local rc=0 seen
  if ((_slurm_signals == 0)); then
    # In the background so the shell can run its traps while the ranks work (bash defers
    # traps until a foreground command returns).
    "${cmd[@]}" &
    _slurm_launcher_pid=$!
    while :; do
      seen=$_slurm_signals
      wait "$_slurm_launcher_pid"
      rc=$?
      # wait returns early (status > 128) when a trapped signal arrives: wait again.
      ((rc > 128 && _slurm_signals != seen)) || break
    done
    slurm_log "launcher exited with status $rc"
  else
    rc=143
    slurm_log "signalled before the launch: not starting the program"
  fi
  trap - USR1 TERM

  if ((_slurm_warned)); then
    if ((RESUBMIT)); then
      # The program stopped at a checkpoint (diffusion-sample may die of the signal: its
      # finished shards stay). The requeued job runs this script again and resumes.
      slurm_log "warned before the time limit: requeueing job $SLURM_JOB_ID"
      scontrol requeue "$SLURM_JOB_ID" || slurm_die "scontrol requeue $SLURM_JOB_ID failed"
      exit 0
    fi
    slurm_log "warned before the time limit: stopped; submit the same command again to resume (or set RESUBMIT=1)"
  fi
  exit "$rc"
}
