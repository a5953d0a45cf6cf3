"""The deployment's setup scripts (deploy/mongo/*.sh, deploy/redis/create-cluster.sh), run for real
by bash against stand-ins for mongosh, redis-cli and getent that record what they are asked.

Docker, MongoDB and a six-node Redis Cluster cannot run here; what can go wrong in these scripts
is their own logic and the JavaScript they build inside shell strings, and that runs here: the
mongosh stand-in executes the scripts' JavaScript under node with mongosh's globals stubbed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
MONGO = ROOT / "deploy" / "mongo"
REDIS = ROOT / "deploy" / "redis"

# mongosh: `mongosh [--quiet] URL (--eval JS | FILE)`; state and log are JSON files.
FAKE_MONGOSH = r"""#!/usr/bin/env node
const fs = require('fs'), vm = require('vm');
const statePath = process.env.FAKE_STATE, logPath = process.env.FAKE_LOG;
const state = JSON.parse(fs.readFileSync(statePath, 'utf8'));
const args = process.argv.slice(2).filter((a) => a !== '--quiet');
const url = args[0];
let code;
if (args[1] === '--eval') { code = args[2]; } else { code = fs.readFileSync(args[1], 'utf8'); }
const log = (entry) => fs.appendFileSync(logPath, JSON.stringify({url, ...entry}) + '\n');
const host = url.replace(/^mongodb:\/\//, '').split('/')[0];
globalThis.print = (line) => log({print: String(line)});
globalThis.sleep = () => {};
globalThis.rs = {
  status: () => {
    if (!state.initiated.includes(host)) {
      const e = new Error('no replset config has been received'); e.codeName = 'NotYetInitialized'; throw e;
    }
    return {ok: 1};
  },
  initiate: (config) => { log({initiate: config}); state.initiated.push(host); },
};
globalThis.sh = {
  enableSharding: (name) => log({enableSharding: name}),
  shardCollection: (ns, key) => log({shardCollection: ns, key}),
  addShard: (spec) => { log({addShard: spec}); state.shards.push(spec.split('/')[0]); },
};
const database = (name) => name === 'config'
  ? {collections: {findOne: () => null}}
  : {getCollection: (c) => ({createIndex: (k, o) => log({createIndex: name + '.' + c, key: k, options: o})})};
globalThis.db = {
  hello: () => ({primary: host}),
  adminCommand: (cmd) => ('listShards' in cmd ? {shards: state.shards.map((id) => ({_id: id}))} : {ok: 1}),
  getSiblingDB: database,
};
try {
  vm.runInThisContext(code);
} finally {
  fs.writeFileSync(statePath, JSON.stringify(state));
}
"""

# redis-cli: `-h HOST cluster info` or `--cluster create ADDR... --cluster-replicas 1 --cluster-yes`
FAKE_REDIS_CLI = r"""#!/usr/bin/env python3
import json, os, sys
state_path, log_path = os.environ["FAKE_STATE"], os.environ["FAKE_LOG"]
state = json.load(open(state_path))
args = sys.argv[1:]
with open(log_path, "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:2] == ["--cluster", "create"]:
    state["formed"] = True
    json.dump(state, open(state_path, "w"))
elif args[2:] == ["cluster", "info"]:
    print("cluster_state:" + ("ok" if state["formed"] else "fail") + "\r")
else:
    sys.exit("unexpected redis-cli call: " + " ".join(args))
"""

FAKE_GETENT = r"""#!/bin/sh
# getent hosts redis-N -> 10.0.0.N
[ "$1" = hosts ] || exit 2
n=${2##*-}
case "$n" in ''|*[!0-9]*) exit 2 ;; esac
echo "10.0.0.$n       $2"
"""


def _bin(tmp_path: Path, **programs: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, text in programs.items():
        path = bindir / name.replace("_", "-")
        path.write_text(text)
        path.chmod(0o755)
    return bindir


def _run(script: Path, tmp_path: Path, bindir: Path, state: dict[str, Any]) -> tuple[int, list[Any], str]:
    state_path, log_path = tmp_path / "state.json", tmp_path / "log.jsonl"
    state_path.write_text(json.dumps(state))
    log_path.write_text("")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_STATE": str(state_path),
           "FAKE_LOG": str(log_path)}
    # The jobs mount deploy/<dir> at /deploy; point that path at the repository's copy.
    text = script.read_text().replace("/deploy/", f"{script.parent}/")
    proc = subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log_path.read_text().splitlines()]
    return proc.returncode, calls, proc.stdout + proc.stderr


@pytest.fixture
def mongosh(tmp_path: Path) -> Path:
    assert shutil.which("node"), "node is missing: scripts/ensure-deps installs it (Debian package nodejs)"
    return _bin(tmp_path, mongosh=FAKE_MONGOSH)


def test_replica_sets_are_initiated_once_with_their_members(tmp_path: Path, mongosh: Path) -> None:
    code, calls, output = _run(MONGO / "init-replica-sets.sh", tmp_path, mongosh, {"initiated": [], "shards": []})
    assert code == 0, output
    initiated = {c["initiate"]["_id"]: c for c in calls if "initiate" in c}
    assert set(initiated) == {"cfgrs", "shard1", "shard2"}
    assert initiated["cfgrs"]["initiate"]["configsvr"] is True
    assert initiated["shard1"]["initiate"]["configsvr"] is False
    assert initiated["cfgrs"]["initiate"]["members"] == [
        {"_id": i, "host": f"mongo-cfg-{i + 1}:27019"} for i in range(3)
    ]
    assert initiated["shard2"]["initiate"]["members"] == [
        {"_id": i, "host": f"mongo-s2-{i + 1}:27018"} for i in range(3)
    ]
    assert initiated["shard1"]["url"] == "mongodb://mongo-s1-1:27018/?directConnection=true"
    assert [c["print"] for c in calls if "print" in c and "primary is" in c["print"]] == [
        "cfgrs: primary is mongo-cfg-1:27019", "shard1: primary is mongo-s1-1:27018",
        "shard2: primary is mongo-s2-1:27018"]

    state = {"initiated": ["mongo-cfg-1:27019", "mongo-s1-1:27018", "mongo-s2-1:27018"], "shards": []}
    code, calls, output = _run(MONGO / "init-replica-sets.sh", tmp_path, mongosh, state)
    assert code == 0, output
    assert not [c for c in calls if "initiate" in c]
    assert sum("already initiated" in c.get("print", "") for c in calls) == 3


def test_sharding_adds_both_shards_then_shards_chatmqs_collections(tmp_path: Path, mongosh: Path) -> None:
    code, calls, output = _run(MONGO / "init-sharding.sh", tmp_path, mongosh, {"initiated": [], "shards": []})
    assert code == 0, output
    assert [c["addShard"] for c in calls if "addShard" in c] == [
        "shard1/mongo-s1-1:27018,mongo-s1-2:27018,mongo-s1-3:27018",
        "shard2/mongo-s2-1:27018,mongo-s2-2:27018,mongo-s2-3:27018",
    ]
    assert all(c["url"] == "mongodb://mongos-1:27017/admin" for c in calls)
    sharded = [c["shardCollection"] for c in calls if "shardCollection" in c]
    assert "chatmq.messages" in sharded and "chatmq.conversations" in sharded
    first_shard_collection = next(i for i, c in enumerate(calls) if "shardCollection" in c)
    last_add = max(i for i, c in enumerate(calls) if "addShard" in c)
    assert last_add < first_shard_collection

    code, calls, output = _run(MONGO / "init-sharding.sh", tmp_path, mongosh,
                               {"initiated": [], "shards": ["shard1", "shard2"]})
    assert code == 0, output
    assert not [c for c in calls if "addShard" in c]


def test_redis_cluster_is_created_from_resolved_addresses_once(tmp_path: Path) -> None:
    bindir = _bin(tmp_path, redis_cli=FAKE_REDIS_CLI, getent=FAKE_GETENT)
    code, calls, output = _run(REDIS / "create-cluster.sh", tmp_path, bindir, {"formed": False})
    assert code == 0, output
    (create,) = [c for c in calls if c[:2] == ["--cluster", "create"]]
    assert create[2:8] == [f"10.0.0.{n}:6379" for n in range(1, 7)]
    assert create[8:] == ["--cluster-replicas", "1", "--cluster-yes"]
    assert "redis cluster formed" in output

    code, calls, output = _run(REDIS / "create-cluster.sh", tmp_path, bindir, {"formed": True})
    assert code == 0, output
    assert not [c for c in calls if c[:2] == ["--cluster", "create"]]
    assert "already formed" in output


def test_redis_script_stops_when_a_node_does_not_resolve(tmp_path: Path) -> None:
    broken_getent = FAKE_GETENT.replace('echo "10.0.0.$n', '[ "$n" = 4 ] && exit 2\necho "10.0.0.$n')
    bindir = _bin(tmp_path, redis_cli=FAKE_REDIS_CLI, getent=broken_getent)
    code, calls, output = _run(REDIS / "create-cluster.sh", tmp_path, bindir, {"formed": False})
    assert code != 0
    assert "cannot resolve redis-4" in output
    assert not [c for c in calls if c[:2] == ["--cluster", "create"]]
