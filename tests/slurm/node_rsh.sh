#!/usr/bin/env bash
# Open MPI's "remote shell" for the namespace nodes (tests/slurm/nodes.sh): mpirun --hostfile
# runs `node_rsh.sh HOST COMMAND...` to start its daemon on HOST, as it would run ssh. Here HOST
# is a node of the cluster named by DIFFUSION_NODES_PREFIX, and COMMAND (one shell line, as ssh
# gets it) runs on that node. Set with `--mca plm_rsh_agent tests/slurm/node_rsh.sh`.
set -uo pipefail
prefix="${DIFFUSION_NODES_PREFIX:?DIFFUSION_NODES_PREFIX names the cluster (nodes.sh PREFIX)}"
host="$1"; shift
exec "$(dirname "${BASH_SOURCE[0]}")/nodes.sh" on "$prefix" "$host" /bin/sh -c "$*"
