#!/bin/bash
# Add both shard replica sets to the cluster (through a mongos), then build chatmq's indexes and
# shard its collections with shard-chatmq.js (the output of `chatmq mongo-shard-script`).
# Safe to run again. Run by the mongo-shard-init job of deploy/docker-compose.cluster.yml.
set -euo pipefail
MONGOS="mongodb://mongos-1:27017/admin"

mongosh --quiet "$MONGOS" --eval "
  const wanted = {
    shard1: 'shard1/mongo-s1-1:27018,mongo-s1-2:27018,mongo-s1-3:27018',
    shard2: 'shard2/mongo-s2-1:27018,mongo-s2-2:27018,mongo-s2-3:27018',
  };
  const known = db.adminCommand({listShards: 1}).shards.map((shard) => shard._id);
  for (const [id, url] of Object.entries(wanted)) {
    if (known.includes(id)) { print(id + ': already a shard'); continue; }
    sh.addShard(url);
    print(id + ': added');
  }
"
mongosh --quiet "$MONGOS" /deploy/shard-chatmq.js
