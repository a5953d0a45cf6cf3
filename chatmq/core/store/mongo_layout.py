"""The MongoDB layout in one place: every index the store builds and every collection's shard key.

``MongoStore`` builds its indexes from ``INDEXES`` and ``shard_script()`` renders the mongosh
commands that shard a cluster from ``SHARD_KEYS``, so the indexes an operator creates by hand and
the ones the store creates at start can never disagree (a name or option mismatch would make the
store's ``create_index`` fail on a sharded cluster). docs/mongodb-sharding.md explains the choices.

The rule MongoDB enforces, and tests/store/test_mongo_sharding.py checks here: on a sharded
collection a unique index must start with the shard key's fields (field names only, so a hashed
``{conv: "hashed"}`` key admits a unique ``{conv: 1, seq: 1}``); every conversation's documents
then live on one shard, which can check uniqueness alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

ASC = 1
DESC = -1


@dataclass(frozen=True, slots=True)
class IndexSpec:
    collection: str
    keys: tuple[tuple[str, Any], ...]  # in order: (field, 1 | -1 | "hashed")
    name: str
    unique: bool = False
    built_by_store: bool = True  # False: another component (GridFS) builds it; only the script does too

    @property
    def key_document(self) -> dict[str, Any]:
        return dict(self.keys)


@dataclass(frozen=True, slots=True)
class ShardKey:
    collection: str
    keys: tuple[tuple[str, Any], ...]
    why: str
    # The fields every targeted query of this collection names with equality (or $in).
    routing_fields: tuple[str, ...] = field(default=())

    @property
    def key_document(self) -> dict[str, Any]:
        return dict(self.keys)


INDEXES: tuple[IndexSpec, ...] = (
    # The log: one seq per conversation and position, one stored copy per client message id.
    IndexSpec("messages", (("conv", ASC), ("seq", ASC)), "conv_seq", unique=True),
    IndexSpec(
        "messages",
        (("conv", ASC), ("sender", ASC), ("client_msg_id", ASC)),
        "conv_sender_client_msg_id",
        unique=True,
    ),
    # Search: a message's words (chatmq.core.search) under a multikey index, newest first per
    # conversation, so a search of some conversations merges their index ranges in time order.
    IndexSpec("messages", (("conv", ASC), ("terms", ASC), ("ts", DESC), ("seq", DESC)), "conv_terms_ts_seq"),
    # Message state: one reaction per (message, emoji, member); which messages attach which media.
    IndexSpec("reactions", (("conv", ASC), ("seq", ASC), ("emoji", ASC), ("user", ASC)), "conv_seq_emoji_user",
              unique=True),
    IndexSpec("media_refs", (("conv", ASC), ("media_id", ASC), ("seq", ASC)), "conv_media_seq", unique=True),
    IndexSpec("markers", (("user", ASC), ("conv", ASC)), "user_conv"),
    IndexSpec("markers", (("conv", ASC), ("user", ASC)), "conv_user"),
    IndexSpec("conversations", (("members", ASC),), "members"),
    # The notifier's outbox (one entry per key) and its deliveries.
    IndexSpec("outbox", (("key", ASC),), "key", unique=True),
    IndexSpec("push_targets", (("user", ASC),), "user"),
    IndexSpec("push_targets", (("platform", ASC), ("token", ASC)), "platform_token"),
    IndexSpec("mutes", (("conv", ASC), ("user", ASC)), "conv_user"),
    IndexSpec("deliveries", (("state", ASC), ("order_key", ASC), ("n", ASC)), "state_order_key_n"),
    IndexSpec("deliveries", (("order_key", ASC), ("n", ASC)), "order_key_n"),
    IndexSpec("deliveries", (("state", ASC), ("updated_at", ASC)), "state_updated_at"),
    # GridFS builds this one itself on the first upload, unless an index on these keys exists; the
    # script builds it first, unique as GridFS would, so sharding on it keeps chunk uniqueness.
    IndexSpec("media.chunks", (("files_id", ASC), ("n", ASC)), "files_id_1_n_1", unique=True,
              built_by_store=False),
)

# Hashed keys: conversation and user ids are chosen by people ("dm-alice-bob", "team-2026-...")
# and cluster lexically, so ranged keys would pile new ones onto one chunk; hashing spreads them
# evenly from the first write while equality queries (all the hot ones) stay single-shard.
SHARD_KEYS: tuple[ShardKey, ...] = (
    ShardKey(
        "messages",
        (("conv", "hashed"),),
        "the message log: every read and write names one conversation, and both unique indexes "
        "start with conv, so each conversation's log (and its uniqueness checks) lives on one shard",
        routing_fields=("conv",),
    ),
    ShardKey(
        "reactions",
        (("conv", "hashed"),),
        "reactions on messages: read with a page of the conversation's messages, written with its log",
        routing_fields=("conv",),
    ),
    ShardKey(
        "media_refs",
        (("conv", "hashed"),),
        "which messages attach which media: written with the log, read when a deletion erases media",
        routing_fields=("conv",),
    ),
    ShardKey(
        "conversations",
        (("_id", "hashed"),),
        "one document per conversation holding the seq counter (last_seq); each append's $inc "
        "names the conversation id, so counter writes spread over all shards",
        routing_fields=("_id",),
    ),
    ShardKey(
        "markers",
        (("user", "hashed"),),
        "read state: a user's conversation list reads all its markers at once (the hot read); "
        "receipts name user and conv",
        routing_fields=("user",),
    ),
    ShardKey(
        "push_targets",
        (("user", "hashed"),),
        "devices' push registrations, read per member of a conversation ($in on user); only "
        "removing a token the provider declared dead (or that changed hands) asks every shard",
        routing_fields=("user",),
    ),
    ShardKey(
        "mutes",
        (("conv", "hashed"),),
        "mute settings, always read for one conversation's members",
        routing_fields=("conv",),
    ),
    ShardKey(
        "users",
        (("_id", "hashed"),),
        "one document per user, read by id on every login",
        routing_fields=("_id",),
    ),
    ShardKey(
        "media.chunks",
        (("files_id", ASC), ("n", ASC)),
        "GridFS upload chunks (bucket 'media'); MongoDB's recommended key for GridFS chunks",
        routing_fields=("files_id",),
    ),
)

# Small, low-traffic collections that stay on the database's primary shard.
UNSHARDED: dict[str, str] = {
    "meta": "counters (membership and users versions, event, outbox and delivery ids)",
    "events": "the membership-change outbox, emptied by the bridge as it publishes",
    "membership_log": "the last 10,000 membership changes (version -> conversation), for incremental views",
    "media.files": "one small document per upload; GridFS reads it by _id",
    "outbox": "the notifier's work queue (one small entry per message, read receipt and conversation "
              "change), emptied as the notifier consumes it",
    "deliveries": "push notifications and webhook calls until delivered, then the delivery log "
                  "(pruned after CHATMQ_DELIVERY_LOG_DAYS); collapsing keeps it far smaller than the log",
    "webhooks": "the operators' webhook subscriptions (a handful)",
}


def unique_index_fits_shard_key(index: IndexSpec, shard_key: ShardKey) -> bool:
    """MongoDB's own rule (ShardKeyPattern::isUniqueIndexCompatible): _id-first indexes always
    fit; otherwise the shard key's field names must be a prefix of the index's field names."""
    index_fields = [name for name, _ in index.keys]
    if index_fields[0] == "_id":
        return True
    key_fields = [name for name, _ in shard_key.keys]
    return index_fields[: len(key_fields)] == key_fields


def _js(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def shard_script(database: str = "chatmq") -> str:
    """mongosh commands (run against a mongos) that create the store's indexes and shard its
    collections. Safe to run again: existing indexes are left alone and sharded collections are
    skipped, with a loud failure if one is sharded on a different key."""
    lines = [
        "// chatmq: shard the store's collections. Generated by `chatmq mongo-shard-script`",
        "// from chatmq/core/store/mongo_layout.py; run against a mongos:",
        "//   mongosh 'mongodb://MONGOS:27017/admin' deploy/mongo/shard-chatmq.js",
        "// docs/mongodb-sharding.md explains each shard key.",
        f"const dbName = {_js(database)};",
        "const target = db.getSiblingDB(dbName);",
        "sh.enableSharding(dbName);",
        "",
        "// Indexes first, exactly as the store builds them (same names and options), so the",
        "// store's own createIndex at start is a no-op. Every unique one starts with its shard key.",
    ]
    for index in INDEXES:
        options = {"name": index.name, **({"unique": True} if index.unique else {})}
        lines.append(f"target.getCollection({_js(index.collection)}).createIndex({_js(index.key_document)}, "
                     f"{_js(options)});")
    lines += [
        "",
        "function shard(collection, key) {",
        "  const ns = dbName + '.' + collection;",
        "  const existing = db.getSiblingDB('config').collections.findOne({_id: ns});",
        "  if (existing) {",
        "    if (JSON.stringify(existing.key) !== JSON.stringify(key)) {",
        "      throw new Error(ns + ' is sharded on ' + JSON.stringify(existing.key) +",
        "                      ', chatmq expects ' + JSON.stringify(key));",
        "    }",
        "    print('already sharded: ' + ns);",
        "    return;",
        "  }",
        "  sh.shardCollection(ns, key);",
        "  print('sharded: ' + ns + ' on ' + JSON.stringify(key));",
        "}",
        "",
    ]
    for key in SHARD_KEYS:
        lines.append(f"// {key.why}")
        lines.append(f"shard({_js(key.collection)}, {_js(key.key_document)});")
    lines.append("")
    lines.append("// Not sharded (they stay on the primary shard): " + ", ".join(sorted(UNSHARDED)) + ".")
    return "\n".join(lines) + "\n"
