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
echo
echo "== L4 authorization: backend accepts only the frontend namespace (examples/policy-backend.yaml)"
node bin/weft.js apply -f examples/policy-backend.yaml
probe() { node bin/weft.js exec "$1" -- curl -s -o /dev/null -m 3 -w '%{http_code}' http://checkout.backend/ || true; }
ok=""
for i in $(seq 20); do  # the policy reaches the agents within a second or so
  [ "$(probe ops/toolbox)" = "000" ] && ok=1 && break
  sleep 0.5
done
echo "  frontend/loadgen -> checkout.backend: HTTP $(probe frontend/loadgen)"
echo "  ops/toolbox      -> checkout.backend: $([ -n "$ok" ] && echo 'refused (connection reset by the node agent)' || echo 'NOT refused')"
grep -h '"response_flags":"DENY"' /run/weft/$LAB/logs/agent_node-*.log | tail -1 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{if(!s)return;const l=JSON.parse(s);console.log(`  agent log: ${l["src.identity"]} -> ${l["dst.workload"]} denied by ${l.policy}`)})'
[ -n "$ok" ] || exit 1

cat <<MSG

Look around:
  node bin/weft.js get pods -A -o wide          # where every pod runs
  node bin/weft.js exec frontend/loadgen -- curl -s http://checkout.backend/
  node bin/weft.js logs frontend/loadgen        # the traffic client's log
  tail /run/weft/$LAB/logs/agent_node-0.log     # the node agent: one line per connection (identities, policy)
  nsenter --net=/run/netns/$LAB.node-0 curl -s localhost:15020/metrics | grep istio_tcp   # Istio's metrics
  nsenter --net=/run/netns/$LAB.node-0 curl -s localhost:15000/config_dump               # workloads, policies, certs
  bpftool cgroup tree $(findmnt -t cgroup2 -n -o TARGET | head -1)/weft/$LAB   # per-pod capture programs
  ip netns list | grep '^$LAB\.'                # nodes and pods are network namespaces
Tear down:
  node bin/weft.js down
MSG
