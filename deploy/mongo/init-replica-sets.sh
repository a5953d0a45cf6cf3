#!/bin/bash
# Initiate the config server replica set and both shard replica sets, then wait until each has
# a primary. Safe to run again: a set that is already initiated is left as it is.
# Run by the mongo-rs-init job of deploy/docker-compose.cluster.yml (mongo image: bash + mongosh).
set -euo pipefail

initiate() {  # initiate SET_NAME PORT IS_CONFIG_SERVER HOST...
  local name=$1 port=$2 configsvr=$3
  shift 3
  local first=$1 members="" id=0
  for host in "$@"; do
    members+="${members:+, }{_id: ${id}, host: '${host}:${port}'}"
    id=$((id + 1))
  done
  mongosh --quiet "mongodb://${first}:${port}/?directConnection=true" --eval "
    try {
      rs.status();
      print('${name}: already initiated');
    } catch (e) {
      if (e.codeName !== 'NotYetInitialized') { throw e; }
      rs.initiate({_id: '${name}', configsvr: ${configsvr}, members: [${members}]});
      print('${name}: initiated');
    }
    while (!db.hello().primary) { sleep(500); }
    print('${name}: primary is ' + db.hello().primary);
  "
}

initiate cfgrs 27019 true mongo-cfg-1 mongo-cfg-2 mongo-cfg-3
initiate shard1 27018 false mongo-s1-1 mongo-s1-2 mongo-s1-3
initiate shard2 27018 false mongo-s2-1 mongo-s2-2 mongo-s2-3
