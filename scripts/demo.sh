#!/usr/bin/env bash
# make demo: a 2-node lab with a small app in two namespaces, some traffic, and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then echo "make demo needs root (network namespaces, veths, cgroups)" >&2; exit 1; fi
weft() { node bin/weft.js "$@"; }
LAB=weft
if [ -d "/run/weft/$LAB" ] || ip netns list | grep -q "^$LAB\."; then
  echo "== removing the previous demo lab"
  weft down --name "$LAB"
fi
echo "== weft up: 2 nodes, the sample app from examples/demo/"
weft up --name "$LAB" --nodes 2 -f examples/demo/
echo
weft get pods -A -o wide
echo
weft get services -A
echo
echo "== sending traffic from frontend/loadgen"
node --import tsx scripts/demo-traffic.ts "$LAB"
cat <<MSG

Look around:
  node bin/weft.js get pods -A -o wide          # where every pod runs
  node bin/weft.js exec frontend/loadgen -- curl -s http://checkout.backend/
  node bin/weft.js logs frontend/loadgen        # the traffic client's log
  tail /run/weft/$LAB/logs/agent_node-0.log     # the node agent: one line per captured connection
  bpftool cgroup tree $(findmnt -t cgroup2 -n -o TARGET | head -1)/weft/$LAB   # per-pod capture programs
  ip netns list | grep '^$LAB\.'                # nodes and pods are network namespaces
Tear down:
  node bin/weft.js down
MSG
