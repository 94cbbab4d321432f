#!/usr/bin/env bash
# A throw-away Slurm cluster for the tests, from Debian's slurmctld, slurmd, slurm-client and
# munge (launch/setup.sh installs them); no systemd, no cgroups, no accounting.
#   tests/slurm/cluster.sh start DIR [NODES]   state, config, logs and pid files under DIR
#       (created); prints `export SLURM_CONF=DIR/slurm.conf` on success. NODES=1 (default): one
#       node, the machine itself, on 127.0.0.1. NODES=2: two nodes `node1` and `node2` built from
#       Linux namespaces (tests/slurm/nodes.sh): each its own network namespace and host name,
#       joined by veth links on a bridge in a third namespace; slurmctld runs on node1 (the login
#       node too: run sbatch/squeue there, with `cluster.sh on DIR node1 CMD...`).
#   tests/slurm/cluster.sh on DIR NODE CMD...   runs CMD on NODE of a 2-node cluster
#   tests/slurm/cluster.sh stop DIR    stops the daemons by their recorded process ids, removes the
#       namespaces (and every process still in them) and DIR
# Exit codes of start: 0 running; 3 Slurm, munge or namespaces are not available; 4 a daemon did
# not start (its log is printed). The settings are explained in docs/launch.md ("Tested on a real
# Slurm", "Several nodes").
set -uo pipefail

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|on DIR ..." >&2; exit 2; }
NODES_SH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/nodes.sh"

# Runs a command where the controller is reachable: on node1 of a 2-node cluster, else here.
on_login() {
  if [ -f "$dir/prefix" ]; then "$NODES_SH" on "$(cat "$dir/prefix")" node1 "$@"; else "$@"; fi
}

stop() {
  local f pid
  # slurmd first, so it does not try to reach a controller that is already gone.
  for f in slurmd slurmd-node1 slurmd-node2 slurmctld munged; do
    pid=$(cat "$dir/$f.pid" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  # The nodes' namespaces go last, with any rank or step daemon still running in them.
  [ -f "$dir/prefix" ] && "$NODES_SH" destroy "$(cat "$dir/prefix")"
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
  local nodes="${1:-1}" b
  [[ "$nodes" == 1 || "$nodes" == 2 ]] || { echo "[slurm] NODES must be 1 or 2, got '$nodes'"; return 2; }
  for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch /usr/bin/scontrol; do
    [ -x "$b" ] || { echo "[slurm] $b is missing (install slurmctld slurmd slurm-client munge)"; return 3; }
  done
  [ "$(id -u)" -eq 0 ] || { echo "[slurm] the test cluster runs its daemons as root; running as $(id -un)"; return 3; }
  id munge >/dev/null 2>&1 && [ -r /etc/munge/munge.key ] || { echo "[slurm] munge user or key missing"; return 3; }

  mkdir -p "$dir"/{state,munge} && chmod 0755 "$dir" && chown munge:munge "$dir/munge" && chmod 0755 "$dir/munge"
  local host ctld_host ctld_port slurmd_port node_lines spool logs
  if ((nodes == 1)); then
    host=$(hostname -s)
    ctld_host="${host}(127.0.0.1)"
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    # The node's real resources, but 8 CPUs advertised (config_overrides) so 4-rank jobs fit on 2 cores.
    node_lines="$(/usr/sbin/slurmd -C | head -1 | sed -E 's/ CPUs=[0-9]+/ CPUs=8/; s/ (Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g') NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP"
    spool="${dir}/spool" logs="${dir}/slurmd"
    mkdir -p "$spool"
  else
    # Each node in its own namespaces: the same ports on every node, no clash with the machine's.
    local prefix="dcn${DIFFUSION_CLUSTER_OWNER:-$PPID}"
    "$NODES_SH" sweep
    "$NODES_SH" create "$prefix" 2 || return 3
    echo "$prefix" >"$dir/prefix"
    ctld_host="node1($("$NODES_SH" addr node1))"
    ctld_port=6817
    slurmd_port=6818
    # 8 CPUs advertised per node (2 real cores in all): several 2-rank-per-node jobs side by side.
    node_lines="NodeName=node1 NodeAddr=$("$NODES_SH" addr node1) CPUs=8 State=UNKNOWN
NodeName=node2 NodeAddr=$("$NODES_SH" addr node2) CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP"
    # %n: each slurmd its own spool folder, log and pid file.
    spool="${dir}/spool-%n" logs="${dir}/slurmd-%n"
    mkdir -p "$dir"/spool-node{1,2} "$dir"/tmp-node{1,2}
    # The nodes share /tmp: the PMIx plugin's per-step folders (under TmpFS) must not clash.
    # srun waits KillWait + 2 s for the steps of a node that is gone (30 s by default).
    node_lines="TmpFS=${dir}/tmp-%n
KillWait=5
${node_lines}"
  fi
  cat >"$dir/slurm.conf" <<CONF
ClusterName=difftest
SlurmctldHost=${ctld_host}
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
# A node whose slurmd stops answering is DOWN (and its jobs end) within seconds, not after 300 s.
SlurmdTimeout=5
MailProg=/bin/true
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${spool}
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdLogFile=${logs}.log
SlurmctldPidFile=${dir}/slurmctld.daemon.pid
SlurmdPidFile=${logs}.daemon.pid
SlurmctldDebug=info
SlurmdDebug=info
SchedulerParameters=sched_interval=2
# sbatch --wait polls every 2 s only while 2 < MinJobAge/2 fails (else 2, 8, then every 32 s);
# a finished job's record then lives 4 s: read results from files, not from scontrol.
MinJobAge=4
${node_lines}
CONF
  export SLURM_CONF="$dir/slurm.conf"

  # One munged for all nodes: its socket is a file, reachable from every network namespace.
  runuser -u munge -- /usr/sbin/munged --socket "$dir/munge/munge.socket" \
    --pid-file "$dir/munge/munged.pid" --log-file "$dir/munge/munged.log" \
    --seed-file "$dir/munge/munged.seed" >"$dir/munged.out" 2>&1 ||
    { echo "[slurm] munged did not start:"; cat "$dir/munged.out" "$dir/munge/munged.log" 2>/dev/null; return 4; }
  cp "$dir/munge/munged.pid" "$dir/munged.pid"

  if ((nodes == 1)); then
    setsid /usr/sbin/slurmctld -D -c -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 < /dev/null &
    echo $! >"$dir/slurmctld.pid"
    setsid /usr/sbin/slurmd -D -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 < /dev/null &
    echo $! >"$dir/slurmd.pid"
  else
    # `nodes.sh on` execs (no fork): the recorded pid is the daemon's.
    local p n
    p=$(cat "$dir/prefix")
    setsid "$NODES_SH" on "$p" node1 /usr/sbin/slurmctld -D -c -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 < /dev/null &
    echo $! >"$dir/slurmctld.pid"
    for n in 1 2; do
      setsid "$NODES_SH" on "$p" "node$n" /usr/sbin/slurmd -D -f "$SLURM_CONF" >"$dir/slurmd-node$n.out" 2>&1 < /dev/null &
      echo $! >"$dir/slurmd-node$n.pid"
    done
  fi

  for _ in $(seq 1 150); do
    if [ "$(on_login sinfo -h -N -o %t 2>/dev/null | grep -cx idle)" -eq "$nodes" ]; then
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.2
  done
  echo "[slurm] the nodes did not become idle within 30 s; sinfo: $(on_login sinfo -h -N 2>&1)"
  tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd*.log "$dir"/*.out 2>/dev/null
  return 4
}

case "$cmd" in
  start) start "${3:-1}"; rc=$?; [ "$rc" -eq 0 ] || stop; exit "$rc" ;;
  stop) stop ;;
  on) [ -f "$dir/prefix" ] || { echo "[slurm] $dir is not a 2-node cluster" >&2; exit 2; }
      exec "$NODES_SH" on "$(cat "$dir/prefix")" "${@:3}" ;;
  *) echo "usage: $0 start|stop|on DIR ..." >&2; exit 2 ;;
esac
