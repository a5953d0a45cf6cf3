"""The naive pipeline's bridge, a baseline for bench/e2e.py: one message at a time, no batching.

For each send on ``chat/{conv}/send/{user}`` it inserts the message with the next seq in its own
SQLite transaction (WAL, synchronous=FULL: fsync per commit, as chatmq's store), then publishes the stored
message to ``chat/{conv}/msg`` and the ack to ``user/{user}/ack`` and waits for both PUBACKs before
taking the next one. Nagle is off on its socket, as on chatmq's bridge. It is what a first
version of this product would look like on stock amqtt; it validates nothing beyond JSON and
exists only to be measured against.

    python -m bench.naive_bridge --port 1883 --db /tmp/naive.db
"""

from __future__ import annotations

import argparse
import queue
import sqlite3
import time

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from chatmq.core.netutil import disable_nagle

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL, client_msg_id TEXT NOT NULL,
    body TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (conv, seq), UNIQUE (conv, sender, client_msg_id)
)
"""


def store(db: sqlite3.Connection, conv: str, sender: str, payload: dict[str, str]) -> dict[str, object]:
    ts = int(time.time() * 1000)
    with db:
        (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conv = ?", (conv,)).fetchone()
        db.execute(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?)",
            (conv, seq, sender, payload["client_msg_id"], payload["body"], ts),
        )
    return {"conv": conv, "seq": seq, "sender": sender, "client_msg_id": payload["client_msg_id"],
            "body": payload["body"], "ts": ts}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="the MQTT broker's port on 127.0.0.1")
    parser.add_argument("--db", required=True, help="SQLite file")
    args = parser.parse_args(argv)

    db = sqlite3.connect(args.db, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(SCHEMA)
    inbound: queue.Queue[paho.MQTTMessage] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="naive-bridge", protocol=paho.MQTTv311)
    client.on_message = lambda c, u, msg: inbound.put(msg)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("chat/+/send/+", qos=1)
    client.on_socket_open = lambda c, u, sock: disable_nagle(sock)  # no delayed-ACK stalls on small packets
    client.connect("127.0.0.1", args.port, keepalive=60)
    client.loop_start()
    print("naive bridge running", flush=True)
    while True:
        msg = inbound.get()
        _, conv, _, sender = msg.topic.split("/")
        try:
            payload = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            continue
        stored = store(db, conv, sender, payload)
        sent = client.publish(f"chat/{conv}/msg", orjson.dumps(stored), qos=1)
        acked = client.publish(f"user/{sender}/ack", orjson.dumps(
            {"client_msg_id": payload["client_msg_id"], "conv": conv, "status": "received", "seq": stored["seq"]}
        ), qos=1)  # fmt: skip
        sent.wait_for_publish(10)
        acked.wait_for_publish(10)


if __name__ == "__main__":
    main()
