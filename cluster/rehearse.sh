#!/usr/bin/env bash
# Rehearse cluster/cluster.yaml on one machine, with the same pieces it uses on AWS:
#   1. a Ray head (`ray start --head`), and NODES "CARLA nodes": more raylets on this machine
#      (`ray start --address ...`), each offering {"carla": K} and its own CARLA state directory;
#   2. K CARLA servers per node and their watchdog, started by
#      `python -m rlmpc.ops.carla_servers start --watch`: the real CARLA when $CARLA_ROOT is
#      set, otherwise the test suite's stand-in server (tests/carla_standin.py, which answers
#      CARLA's version RPC: what the tool checks);
#   3. NODES*K Ray actors, each reserving one "carla", that claim_server() on their node: every
#      one must get a server of its own, from the node it runs on;
#   4. a short training run, `launch.py --ray-address <this cluster>`, whose rollout actors
#      reserve "carla" too (--actor-resources carla=1), so they run on the CARLA nodes.
# Everything it starts it stops on exit, by process group id (never `ray stop`, which would end
# every Ray on the machine).
#
# usage: cluster/rehearse.sh [launch.py options]   (they replace the short default run)
# env:   NODES=2 K=2 RAY_PORT=6390 BASE_PORT=24000 CARLA_ROOT= PY=.venv/bin/python
set -euo pipefail
set -m  # background jobs get process groups of their own: stopped below by group id
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
RAY="$(dirname "$PY")/ray"
NODES=${NODES:-2}
K=${K:-2}
RAY_PORT=${RAY_PORT:-6390}
BASE_PORT=${BASE_PORT:-24000}
WORK=$(mktemp -d /tmp/rlmpc-rehearsal.XXXXXX)
ADDRESS=127.0.0.1:$RAY_PORT
groups=()
# Token authentication, with a token of this rehearsal's own (never ~/.ray/auth_token): every
# `ray start`, driver and launch.py below reads these two variables.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WORK/auth_token"
(umask 077 && "$PY" -c "import secrets; print(secrets.token_hex(32), end='')" >"$RAY_AUTH_TOKEN_PATH")

cleanup() {
  set +e
  for n in $(seq 1 "$NODES"); do
    "$PY" -m rlmpc.ops.carla_servers stop --state-dir "$WORK/node$n" --grace 5 >/dev/null 2>&1
  done
  for ((i = ${#groups[@]} - 1; i >= 0; i--)); do  # workers first, the head last
    kill -TERM -- "-${groups[i]}" 2>/dev/null
  done
  for g in "${groups[@]}"; do
    for _ in $(seq 1 100); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null
  done
  echo "rehearsal files: $WORK"
}
trap cleanup EXIT

echo "== 1. Ray head on $ADDRESS and $NODES CARLA nodes with {\"carla\": $K} each (logs in $WORK)"
"$RAY" start --head --block --port="$RAY_PORT" --num-cpus=2 --num-gpus=0 \
  --include-dashboard=false --object-store-memory=200000000 >"$WORK/head.log" 2>&1 &
groups+=($!)
wait_nodes() {  # until $1 nodes are alive (a raylet takes its file names when it starts)
  "$PY" - "$1" <<'EOF'
import sys, time
import ray
ray.init(log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[1]):
    assert time.monotonic() < deadline, f"fewer than {sys.argv[1]} Ray nodes after 120 s"
    time.sleep(0.5)
EOF
}
export RAY_ADDRESS=$ADDRESS
wait_nodes 1
for n in $(seq 1 "$NODES"); do
  mkdir -p "$WORK/node$n"
  # Actors on this raylet inherit its environment: that is how claim_server() finds this
  # node's servers; on the cluster every node is its own machine and the default is used.
  # Raylets sharing a machine need ports of their own (on the cluster each has a machine).
  p=$((RAY_PORT + 100 * n))
  RLMPC_CARLA_STATE_DIR="$WORK/node$n" "$RAY" start --block --address="$ADDRESS" \
    --num-cpus=1 --num-gpus=0 --resources="{\"carla\": $K}" --object-store-memory=100000000 \
    --node-manager-port=$((p + 1)) --object-manager-port=$((p + 2)) \
    --dashboard-agent-listen-port=$((p + 3)) --dashboard-agent-grpc-port=$((p + 4)) \
    --runtime-env-agent-port=$((p + 5)) --metrics-export-port=$((p + 6)) \
    --min-worker-port=$((p + 10)) --max-worker-port=$((p + 99)) >"$WORK/node$n.log" 2>&1 &
  groups+=($!)
  wait_nodes $((n + 1))
done
"$RAY" status --address="$ADDRESS" | sed -n '/Resources/,$p'

echo "== 2. $K CARLA servers per node, and their watchdog"
CARLA=${CARLA_ROOT:-}
if [ -z "$CARLA" ]; then
  CARLA="$WORK/carla-standin"
  mkdir -p "$CARLA"
  # the venv's python by its own path (realpath would resolve it to the base interpreter,
  # without the venv's packages)
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" \
    "$(realpath tests/carla_standin.py)" >"$CARLA/CarlaUE4.sh"
  chmod +x "$CARLA/CarlaUE4.sh"
  echo "(CARLA_ROOT is not set: using the test suite's stand-in server)"
fi
for n in $(seq 1 "$NODES"); do
  "$PY" -m rlmpc.ops.carla_servers start --state-dir "$WORK/node$n" --count "$K" --carla-root "$CARLA" \
    --base-port $((BASE_PORT + (n - 1) * 3 * K)) --tm-base-port $((BASE_PORT + 1000 + (n - 1) * K)) --watch
done

echo "== 3. $((NODES * K)) actors reserving one \"carla\" each claim servers"
"$PY" - "$NODES" "$K" <<'EOF'
import os, sys
import ray
nodes, k = map(int, sys.argv[1:])
ray.init(log_to_driver=False, logging_level="ERROR")

@ray.remote(num_cpus=0, resources={"carla": 1})
class Claimer:
    def claim(self):
        from envs.racing.carla_servers import claim_server
        c = claim_server()
        return ray.get_runtime_context().get_node_id()[:8], os.environ["RLMPC_CARLA_STATE_DIR"], tuple(c)

actors = [Claimer.remote() for _ in range(nodes * k)]
got = ray.get([a.claim.remote() for a in actors], timeout=120)
for node, state, claim in sorted(got, key=lambda g: g[2][1]):
    print(f"  node {node} ({os.path.basename(state)}): host {claim[0]} port {claim[1]} tm_port {claim[2]}")
ports = [g[2][1] for g in got]
assert len(set(ports)) == nodes * k, f"two actors share a server: {ports}"
assert len({g[0] for g in got}) == nodes, "claims did not spread over every CARLA node"
print(f"ok: {nodes * k} actors, {nodes * k} distinct servers on {nodes} nodes")
EOF

echo "== 4. launch.py on this cluster (rollout actors on the CARLA nodes)"
if [ $# -eq 0 ]; then
  set -- --env racing --num-actors "$NODES" --envs-per-actor 2 --actor-resources carla=1 \
    --actor-cpus 0.5 --total-env-steps $((64 * 3)) --n-steps 64 --batch-size 16 --n-epochs 1 \
    --hidden-sizes 16 --num-samples 16 --eval-every 0 --final-eval-episodes 0 \
    --learner-device cpu --wandb-mode disabled --no-progress
fi
"$PY" launch.py --ray-address "$ADDRESS" --runs-dir "$WORK/runs" "$@"
echo "rehearsal passed"
