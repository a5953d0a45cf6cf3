#!/bin/bash
# Join the six Redis nodes into one cluster: three masters, one replica each. Safe to run again:
# an existing healthy cluster is left alone. Run by the redis-cluster-create job of
# deploy/docker-compose.cluster.yml (redis image: bash, getent, redis-cli).
#
# redis-cli --cluster create needs IP addresses (CLUSTER MEET refuses names), so the names are
# resolved here; the nodes themselves announce their names (cluster-announce-hostname), which is
# what clients are redirected to, so a node that comes back with a new IP is still found.
set -euo pipefail
NODES=(redis-1 redis-2 redis-3 redis-4 redis-5 redis-6)

if redis-cli -h "${NODES[0]}" cluster info | grep -q '^cluster_state:ok'; then
  echo "redis cluster already formed"
  exit 0
fi
addresses=()
for node in "${NODES[@]}"; do
  # getent fails for an unknown name: say which one instead of letting set -e exit silently
  if ! ip=$(getent hosts "$node" | awk '{print $1; exit}') || [ -z "$ip" ]; then
    echo "cannot resolve $node" >&2
    exit 1
  fi
  addresses+=("${ip}:6379")
done
redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes
until redis-cli -h "${NODES[0]}" cluster info | grep -q '^cluster_state:ok'; do sleep 1; done
echo "redis cluster formed: ${NODES[*]}"
