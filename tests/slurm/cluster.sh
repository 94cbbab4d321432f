#!/usr/bin/env bash
# A throw-away single-node Slurm cluster for the tests, from Debian's slurmctld, slurmd,
# slurm-client and munge (launch/setup.sh installs them); no systemd, no cgroups, no accounting.
#   tests/slurm/cluster.sh start DIR   state, config, logs and pid files under DIR (created);
#                                      prints `export SLURM_CONF=DIR/slurm.conf` on success
#   tests/slurm/cluster.sh stop DIR    stops the daemons by their recorded process ids, removes DIR
# Exit codes of start: 0 running; 3 Slurm or munge is not installed; 4 a daemon did not start
# (its log is printed). The settings are explained in docs/launch.md ("Tested on a real Slurm").
set -uo pipefail

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  local f pid
  # slurmd first, so it does not try to reach a controller that is already gone.
  for f in slurmd slurmctld munged; do
    pid=$(cat "$dir/$f.pid" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  rm -rf "$dir"
}

free_port() {  # a TCP port nothing listens on, so two clusters (or a real Slurm) do not clash
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  echo 6817
}

start() {
  local b
  for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch /usr/bin/scontrol; do
    [ -x "$b" ] || { echo "[slurm] $b is missing (install slurmctld slurmd slurm-client munge)"; return 3; }
  done
  [ "$(id -u)" -eq 0 ] || { echo "[slurm] the test cluster runs its daemons as root; running as $(id -un)"; return 3; }
  id munge >/dev/null 2>&1 && [ -r /etc/munge/munge.key ] || { echo "[slurm] munge user or key missing"; return 3; }

  mkdir -p "$dir"/{state,spool,munge} && chmod 0755 "$dir" && chown munge:munge "$dir/munge" && chmod 0755 "$dir/munge"
  local host node ctld_port slurmd_port
  host=$(hostname -s)
  # The node's real resources, but 8 CPUs advertised (config_overrides) so 4-rank jobs fit on 2 cores.
  node=$(/usr/sbin/slurmd -C | head -1 | sed -E 's/ CPUs=[0-9]+/ CPUs=8/; s/ (Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g')
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  cat >"$dir/slurm.conf" <<CONF
ClusterName=difftest
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s).
AuthInfo=socket=${dir}/munge/munge.socket,cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdLogFile=${dir}/slurmd.log
SlurmctldPidFile=${dir}/slurmctld.daemon.pid
SlurmdPidFile=${dir}/slurmd.daemon.pid
SlurmctldDebug=info
SlurmdDebug=info
SchedulerParameters=sched_interval=2
# sbatch --wait polls every 2 s only while 2 < MinJobAge/2 fails (else 2, 8, then every 32 s);
# a finished job's record then lives 4 s: read results from files, not from scontrol.
MinJobAge=4
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"

  runuser -u munge -- /usr/sbin/munged --socket "$dir/munge/munge.socket" \
    --pid-file "$dir/munge/munged.pid" --log-file "$dir/munge/munged.log" \
    --seed-file "$dir/munge/munged.seed" >"$dir/munged.out" 2>&1 ||
    { echo "[slurm] munged did not start:"; cat "$dir/munged.out" "$dir/munge/munged.log" 2>/dev/null; return 4; }
  cp "$dir/munge/munged.pid" "$dir/munged.pid"

  setsid /usr/sbin/slurmctld -D -c -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 < /dev/null &
  echo $! >"$dir/slurmctld.pid"
  setsid /usr/sbin/slurmd -D -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 < /dev/null &
  echo $! >"$dir/slurmd.pid"

  for _ in $(seq 1 150); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.2
  done
  echo "[slurm] the node did not become idle within 30 s; sinfo: $(sinfo -h 2>&1)"
  tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log "$dir"/*.out 2>/dev/null
  return 4
}

case "$cmd" in
  start) start; rc=$?; [ "$rc" -eq 0 ] || stop; exit "$rc" ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
