"""MongoDB sharding: shard keys that admit the store's unique indexes, a message log whose every
query names its conversation, the sharding script the operator runs, and durable acks.

The contract suite already runs against a spied store (the ``mongomock-sharded`` backend in
conftest.py); these tests show the spy catches what it must and that the contract traffic
really reaches every message-log operation, so its silence means something.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo import ReadPreference
from pymongo.read_preferences import Nearest
from pymongo.write_concern import WriteConcern

from chatmq.cli.main import cli
from chatmq.core.config import Settings
from chatmq.core.store.base import ReceiptUpdate
from chatmq.core.store.mongo import DURABLE, MongoStore, durable_write_concern
from chatmq.core.store.mongo_layout import (
    INDEXES,
    SHARD_KEYS,
    UNSHARDED,
    IndexSpec,
    ShardKey,
    shard_script,
    unique_index_fits_shard_key,
)
from tests.store.helpers import TS, fill, msg, seed
from tests.store.shardspy import SpyCollection, spy_on

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "mongo" / "shard-chatmq.js"
KEY_OF = {key.collection: key for key in SHARD_KEYS}


# --- the query layer ------------------------------------------------------------------------


def test_every_message_log_operation_names_its_conversation() -> None:
    """Drive every store method that touches the log; each call must be targeted, and the log
    must have seen finds, inserts, counts and counter updates (else this test proves nothing)."""
    store = MongoStore.mongomock("sharded_ops")
    log = spy_on(store)
    seed(store, ("general", "random"))
    fill(store, "general", 5)
    store.append([msg("general", "alice", "general-1"), msg("random", "bob", "r1"), msg("random", "bob", "r1")])
    store.history("general")
    store.history("general", before=3, limit=2)
    store.history("general", after=2, limit=2)
    store.count_unread("general", "bob", 1)
    store.apply_receipts([ReceiptUpdate("general", "bob", 3, "read", TS), ReceiptUpdate("nope", "bob", 1, "read", TS)])
    store.markers_of("bob")
    store.add_member("random", "carol")
    store.remove_member("random", "carol")
    store.set_title("general", "General")
    store.close()

    assert log.violations == []
    message_ops = {(op, method) for op, method, _ in log.targeted("messages")}
    assert {("find", "_stored_originals"), ("insert_many", "_insert"), ("find", "history"),
            ("count_documents", "count_unread")} <= message_ops
    for op, _, spec in log.targeted("messages"):
        docs = spec if op == "insert_many" else [spec]
        assert all(isinstance(doc["conv"], str) for doc in docs), (op, spec)  # one conversation: one shard
    counter = [spec for op, method, spec in log.targeted("conversations") if op == "find_one_and_update"]
    assert counter and all(set(spec) == {"_id"} for spec in counter)  # the seq $inc targets one document
    receipts = [spec for op, _, spec in log.targeted("markers") if op in ("find_one_and_update", "update_one")]
    assert receipts and all(spec["user"] == "bob" for spec in receipts)


def _spied() -> tuple[MongoStore, Any]:
    store = MongoStore.mongomock("sharded_spy")
    log = spy_on(store)
    seed(store)
    return store, log


@pytest.mark.parametrize(
    "query",
    [
        lambda s: list(s._messages.find({"sender": "alice"})),
        lambda s: list(s._history.find()),
        lambda s: s._history.count_documents({"seq": {"$gt": 0}}),
        lambda s: s._messages.find_one({"conv": {"$gt": "a"}}),  # a range over conv: every shard
        lambda s: s._messages.insert_one({"_id": "x", "seq": 1}),
        lambda s: list(s._messages.aggregate([{"$sort": {"seq": 1}}])),
        lambda s: s._markers.update_one({"_id": "general/bob"}, {"$max": {"read_seq": 1}}, upsert=True),
        lambda s: s._convs.find_one_and_update({"title": None}, {"$inc": {"last_seq": 1}}),
    ],
    ids=["find", "find-no-filter", "count", "conv-range", "insert", "aggregate", "marker-upsert", "counter"],
)
def test_the_spy_catches_untargeted_queries(query: Any) -> None:
    store, log = _spied()
    query(store)
    assert len(log.violations) == 1, log.violations
    store.close()


def test_the_spy_refuses_collection_methods_it_does_not_check() -> None:
    store, _ = _spied()
    with pytest.raises(AttributeError, match=r"teach tests/store/shardspy\.py"):
        store._messages.bulk_write([])
    store.close()


def test_a_store_regression_is_named_with_its_method() -> None:
    class Careless(MongoStore):
        def history(self, conv_id: str, **_: Any) -> Any:  # forgets the conversation
            return list(self._history.find({}).limit(1))

    store = Careless(MongoStore.mongomock("careless")._db)
    log = spy_on(store)
    store.history("general")
    assert log.violations and log.violations[0].startswith("history: find on messages")


# --- shard keys and indexes -----------------------------------------------------------------


def test_store_builds_exactly_the_layout_indexes() -> None:
    store = MongoStore.mongomock("layout")
    built = {
        (name, index["name"]): (list(index["key"].items()), bool(index.get("unique")))
        for name in {index.collection for index in INDEXES if index.built_by_store}
        for index in store._db.get_collection(name).list_indexes()
        if index["name"] != "_id_"
    }
    expected = {(i.collection, i.name): (list(i.keys), i.unique) for i in INDEXES if i.built_by_store}
    assert built == expected
    store.close()


def test_every_unique_index_starts_with_its_collections_shard_key() -> None:
    unique = [index for index in INDEXES if index.unique]
    assert {index.collection for index in unique} >= {"messages"}
    for index in unique:
        if index.collection in UNSHARDED:
            continue  # one shard holds it all: any unique index works
        key = KEY_OF.get(index.collection)
        assert key is not None, f"{index.collection} has a unique index but is not sharded"
        assert unique_index_fits_shard_key(index, key), (index, key)
    assert set(KEY_OF).isdisjoint(UNSHARDED)


def test_why_the_message_shard_key_is_conv_alone() -> None:
    """A ranged {conv, seq} key would forbid the idempotency index; MongoDB's rule, checked here."""
    ranged = ShardKey("messages", (("conv", 1), ("seq", 1)), "rejected")
    by_client_id = next(i for i in INDEXES if i.name == "conv_sender_client_msg_id")
    assert not unique_index_fits_shard_key(by_client_id, ranged)
    assert unique_index_fits_shard_key(by_client_id, KEY_OF["messages"])
    assert unique_index_fits_shard_key(IndexSpec("x", (("_id", 1), ("a", 1)), "id_a", unique=True), ranged)


def test_every_sharded_collection_has_a_routing_field_in_its_key() -> None:
    for key in SHARD_KEYS:
        assert key.routing_fields and key.routing_fields[0] == key.keys[0][0], key


# --- the sharding script --------------------------------------------------------------------


def test_committed_script_is_the_generated_one() -> None:
    assert SCRIPT.read_text() == shard_script("chatmq"), "run: chatmq mongo-shard-script > " + str(SCRIPT)
    result = CliRunner().invoke(cli, ["mongo-shard-script", "--db", "chat_prod"])
    assert result.exit_code == 0, result.output
    assert 'const dbName = "chat_prod";' in result.output


# A stand-in for mongosh's globals: records what the script asks of the cluster.
_FAKE_MONGOSH = r"""
const fs = require('fs'), vm = require('vm');
const sharded = JSON.parse(process.argv[3]);
const calls = [];
globalThis.print = (line) => calls.push(['print', line]);
globalThis.sh = {
  enableSharding: (name) => calls.push(['enableSharding', name]),
  shardCollection: (ns, key) => calls.push(['shardCollection', ns, key]),
};
globalThis.db = {
  getSiblingDB: (name) => name === 'config'
    ? {collections: {findOne: (q) => (q._id in sharded ? {_id: q._id, key: sharded[q._id]} : null)}}
    : {getCollection: (c) => ({createIndex: (k, o) => calls.push(['createIndex', name + '.' + c, k, o])})},
};
try {
  vm.runInThisContext(fs.readFileSync(process.argv[2], 'utf8'));
} catch (e) {
  console.log(JSON.stringify({error: String(e.message)}));
  process.exit(3);
}
console.log(JSON.stringify({calls}));
"""


def _run_script(tmp_path: Path, sharded: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None, "node is missing: scripts/ensure-deps installs it (Debian package nodejs)"
    harness = tmp_path / "fake_mongosh.js"
    harness.write_text(_FAKE_MONGOSH)
    proc = subprocess.run([node, str(harness), str(SCRIPT), json.dumps(sharded)],
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_script_builds_the_indexes_then_shards_every_collection(tmp_path: Path) -> None:
    code, out = _run_script(tmp_path, {})
    assert code == 0, out
    calls = out["calls"]
    assert calls[0] == ["enableSharding", "chatmq"]
    indexes = [c for c in calls if c[0] == "createIndex"]
    assert [(c[1], [list(pair) for pair in c[2].items()], c[3]) for c in indexes] == [
        (f"chatmq.{i.collection}", [list(k) for k in i.keys],
         {"name": i.name, **({"unique": True} if i.unique else {})})
        for i in INDEXES
    ]
    sharding = [c for c in calls if c[0] == "shardCollection"]
    assert [(c[1], [list(pair) for pair in c[2].items()]) for c in sharding] == [
        (f"chatmq.{k.collection}", [list(pair) for pair in k.keys]) for k in SHARD_KEYS
    ]
    last_index = max(i for i, c in enumerate(calls) if c[0] == "createIndex")
    assert all(calls.index(c) > last_index for c in sharding), "unique indexes must exist before sharding"


def test_script_runs_again_without_resharding(tmp_path: Path) -> None:
    done = {f"chatmq.{k.collection}": k.key_document for k in SHARD_KEYS}
    code, out = _run_script(tmp_path, done)
    assert code == 0, out
    assert not [c for c in out["calls"] if c[0] == "shardCollection"]
    assert sum(1 for c in out["calls"] if c[0] == "print" and c[1].startswith("already sharded")) == len(SHARD_KEYS)


def test_script_stops_on_a_collection_sharded_on_another_key(tmp_path: Path) -> None:
    code, out = _run_script(tmp_path, {"chatmq.messages": {"conv": 1, "seq": 1}})
    assert code == 3
    assert "chatmq.messages is sharded on" in out["error"] and "chatmq expects" in out["error"]


# --- write concern and read preference --------------------------------------------------------


def test_url_write_concern_is_laid_over_journaled_majority() -> None:
    assert durable_write_concern(WriteConcern()) == DURABLE
    timed = durable_write_concern(WriteConcern(wtimeout=5000))
    assert timed.document == {"w": "majority", "j": True, "wtimeout": 5000}
    with pytest.raises(ValueError, match="w=0"):
        durable_write_concern(WriteConcern(w=0))


def test_w0_in_the_store_url_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="w=0"):
        MongoStore.from_url("mongodb://127.0.0.1:9/chatmq?w=0&serverSelectionTimeoutMS=100")


def test_only_history_reads_follow_the_read_preference() -> None:
    db = MongoStore.mongomock("reads")._db
    store = MongoStore(db, history_read_preference=Nearest(max_staleness=120))
    assert store._history.read_preference == Nearest(max_staleness=120)
    assert store._history.read_concern.level == "majority"
    for deciding in (store._messages, store._convs, store._markers, store._users, store._meta, store._events):
        assert deciding.read_preference == ReadPreference.PRIMARY
        assert deciding.write_concern == DURABLE


def test_settings_put_the_history_read_preference_into_the_store_url() -> None:
    settings = Settings(store_url="mongodb://mongos-1:27017,mongos-2:27017/chatmq?w=majority",
                        mongo_history_read_preference="nearest", mongo_history_max_staleness_s=120)
    assert settings.resolved_store_url == (
        "mongodb://mongos-1:27017,mongos-2:27017/chatmq?w=majority&readPreference=nearest&maxStalenessSeconds=120"
    )
    assert Settings(store_url="mongodb://m/chatmq").resolved_store_url == "mongodb://m/chatmq"
    clash = Settings(store_url="mongodb://m/chatmq?readPreference=primary", mongo_history_read_preference="nearest")
    with pytest.raises(ValueError, match="readPreference=primary"):
        _ = clash.resolved_store_url
    with pytest.raises(ValueError, match="mongodb://"):
        _ = Settings(store_url="sqlite:////tmp/x.db", mongo_history_read_preference="nearest").resolved_store_url


def test_spy_collection_type_is_used_for_every_store_collection() -> None:
    store, _ = _spied()
    for attribute in ("_users", "_convs", "_messages", "_meta", "_markers", "_events", "_history"):
        assert isinstance(getattr(store, attribute), SpyCollection), attribute
    store.close()
