#!/usr/bin/env bash
# "Nodes" for multi-node tests on one machine: each node is its own network namespace, entered
# with its own UTS namespace whose host name is the node's name, so programs on it see only its
# interfaces and call themselves node1, node2, ... The nodes' eth0 are veth links to a bridge
# in a third ("switch") namespace, with addresses 192.168.231.11, .12, ... that exist only inside
# these namespaces: nothing is added to the machine's own network, and traffic between the nodes
# never leaves them. Needs root (ip netns, unshare).
#   nodes.sh create PREFIX N          namespaces PREFIX-sw and PREFIX-node1..N, links up
#   nodes.sh on PREFIX NODE CMD...    runs CMD on NODE (its netns, host name NODE)
#   nodes.sh kill PREFIX NODE         SIGKILL to every process on NODE (a lost node)
#   nodes.sh destroy PREFIX           SIGKILL to every process left on the nodes, then removes
#                                     the namespaces (which removes the links and the bridge)
#   nodes.sh sweep                    destroys every `dcn<pid>` cluster whose creating process
#                                     <pid> is gone (a test killed before its teardown ran)
#   nodes.sh addr NODE                the address of NODE (node3 -> 192.168.231.13)
# A PREFIX of the form dcn<pid of the test> lets `sweep` find what a killed test left behind.
set -uo pipefail

kSubnet=192.168.231

die() { echo "[nodes] $*" >&2; exit 3; }

addr() { echo "$kSubnet.$((10 + ${1#node}))"; }

namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-(sw|node[0-9]+)\$"; }

destroy() {
  local ns pids
  for ns in $(namespaces "$1"); do
    # SIGKILL also ends stopped processes; nothing in these namespaces is anyone else's.
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  done
  for ns in $(namespaces "$1"); do
    for _ in $(seq 1 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
    ip netns del "$ns" 2>/dev/null || echo "[nodes] could not remove namespace $ns" >&2
  done
}

create() {
  local prefix="$1" n="$2" i ns
  [ "$(id -u)" -eq 0 ] || die "network namespaces need root; running as $(id -un)"
  command -v ip >/dev/null && command -v unshare >/dev/null || die "ip (iproute2) or unshare missing"
  [ -z "$(namespaces "$prefix")" ] || die "namespaces $prefix-* exist already"
  ip netns add "$prefix-sw" 2>/dev/null || die "cannot create a network namespace (ip netns add $prefix-sw)"
  ip -n "$prefix-sw" link add br0 type bridge || { destroy "$prefix"; die "no bridge support in this kernel"; }
  ip -n "$prefix-sw" link set br0 up
  for i in $(seq 1 "$n"); do
    ns="$prefix-node$i"
    ip netns add "$ns" &&
      ip -n "$prefix-sw" link add "v$i" type veth peer name eth0 netns "$ns" &&
      ip -n "$prefix-sw" link set "v$i" master br0 &&
      ip -n "$prefix-sw" link set "v$i" up &&
      # IPv4 only: no IPv6 link-local addresses still in duplicate detection at start-up.
      nsenter --net="/run/netns/$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 &&
      ip -n "$ns" addr add "$(addr "node$i")/24" dev eth0 &&
      ip -n "$ns" link set lo up &&
      ip -n "$ns" link set eth0 up ||
      { destroy "$prefix"; die "could not build node$i"; }
  done
}

on() {
  local prefix="$1" node="$2"; shift 2
  # nsenter, not `ip netns exec`: that remounts /sys for the namespace, which hides
  # /sys/fs/cgroup from slurmd.
  [ -e "/run/netns/$prefix-$node" ] || die "no node $node in cluster $prefix"
  exec nsenter --net="/run/netns/$prefix-$node" unshare --uts -- /bin/sh -c 'hostname "$0" && exec "$@"' "$node" "$@"
}

sweep() {
  local prefix pid
  for prefix in $(ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's/^\(dcn[0-9]*\)-sw$/\1/p'); do
    pid=${prefix#dcn}
    kill -0 "$pid" 2>/dev/null && continue
    echo "[nodes] removing the namespaces of a test that is gone ($prefix-*)" >&2
    destroy "$prefix"
  done
}

case "${1:-}" in
  create) [ $# -eq 3 ] || die "usage: $0 create PREFIX N"; create "$2" "$3" ;;
  on) [ $# -ge 4 ] || die "usage: $0 on PREFIX NODE CMD..."; shift; on "$@" ;;
  kill)
    [ $# -eq 3 ] || die "usage: $0 kill PREFIX NODE"
    pids=$(ip netns pids "$2-$3" 2>/dev/null)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    exit 0 ;;
  destroy) [ $# -eq 2 ] || die "usage: $0 destroy PREFIX"; destroy "$2" ;;
  sweep) sweep ;;
  addr) addr "$2" ;;
  *) die "usage: $0 create|on|kill|destroy|sweep|addr ..." ;;
esac
