"""kill -9 the notifier process mid-burst: a standby takes over and every webhook and every
notification arrives, nothing missing, and a repeat only ever carries a repeated idempotency key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from chatmq.core.store import NewMessage, open_store
from chatmq.core.store.base import DELIVERED, PushTarget, Webhook, now_ms
from tests.notify.receiver import Receiver, Reply

pytestmark = pytest.mark.timeout(120)

CONVS = ("c0", "c1", "c2")
PER_CONV = 100


def start_notifier(data_dir: Path, redis_url: str, gateway: Receiver, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
    env.update({"CHATMQ_DATA_DIR": str(data_dir), "CHATMQ_REDIS_URL": redis_url,
                "CHATMQ_PUSH_GATEWAY_URL": gateway.url + "/notify", "CHATMQ_PUSH_COLLAPSE_S": "0",
                "CHATMQ_NOTIFIER_LEASE_S": "1", "CHATMQ_DELIVERY_RETRY_BASE_S": "0.05",
                "CHATMQ_DELIVERY_RETRY_CAP_S": "0.2"})  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "chatmq.cli", "notifier"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip


def test_kill_9_mid_burst_loses_nothing_and_repeats_only_idempotency_keys(
    data_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{data_dir / 'chatmq.db'}")
    for user in ("alice", "bob", "carol"):
        store.create_user(user, "h")
    for conv in CONVS:
        store.create_conversation(conv, ["alice", "bob", "carol"])
    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok-bob"))
    store.put_push_target(PushTarget("carol", "phone", "apns", "tok-carol"))
    gateway = Receiver(Reply(200, delay_s=0.004)).start()
    hooks = Receiver(Reply(200, delay_s=0.004)).start()
    store.add_webhook(Webhook("sink", hooks.url, "s", ("message.created",)))
    log = tmp_path / "notifier.log"
    first = start_notifier(data_dir, redis_url, gateway, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        def burst() -> None:
            for i in range(1, PER_CONV + 1):
                store.append([NewMessage(conv, "alice", f"m{i}", f"{conv} #{i}", now_ms()) for conv in CONVS])
                time.sleep(0.005)

        writer = threading.Thread(target=burst)
        writer.start()
        hooks.wait_for(lambda rs: len(rs) >= 60, timeout=30)
        first.send_signal(signal.SIGKILL)  # mid-burst, requests on the wire
        first.wait(10)
        killed_at = len(hooks.received())
        second = start_notifier(data_dir, redis_url, gateway, log)
        writer.join(60)
        wanted = {f"m:{conv}:{seq}" for conv in CONVS for seq in range(1, PER_CONV + 1)}
        hooks.wait_for(lambda rs: {r.json()["id"] for r in rs} >= wanted, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not store.pending_outbox(1) and all(d.state == DELIVERED for d in store.list_deliveries(limit=10**6)):
                break
            time.sleep(0.1)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(15)
        gateway.stop()
        hooks.stop()
    assert killed_at < len(wanted), "the kill came after everything was sent: it proved nothing"
    print(f"webhook requests {len(hooks.received())} for {len(wanted)} events; killed after {killed_at}")

    # Webhooks: every event arrived; a repeat carries the same delivery key; order per conversation.
    received = hooks.received()
    key_of: dict[str, set[str]] = defaultdict(set)
    first_seen: dict[str, list[int]] = defaultdict(list)
    for request in received:
        body = request.json()
        key_of[body["id"]].add(request.header("X-Chatmq-Delivery") or "")
        if len(key_of[body["id"]]) == 1 and body["data"]["seq"] not in first_seen[body["conv"]]:
            first_seen[body["conv"]].append(body["data"]["seq"])
    assert set(key_of) == wanted
    assert all(keys == {f"w:sink:{event}"} for event, keys in key_of.items())
    for conv in CONVS:
        assert first_seen[conv] == list(range(1, PER_CONV + 1)), conv

    # Push: every notification was delivered, in seq order per device and conversation, and the
    # newest message of each conversation reached both devices.
    deliveries = store.list_deliveries(limit=10**6)
    assert deliveries and all(d.state == DELIVERED for d in deliveries), {d.state for d in deliveries}
    bodies_by_key: dict[str, set[bytes]] = defaultdict(set)
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for request in gateway.received():
        note = request.json()["notification"]
        assert request.header("Idempotency-Key") == note["id"]
        bodies_by_key[note["id"]].add(note["message_id"].encode())
        key = (note["user"], note["conv"])
        if not seqs[key] or seqs[key][-1] != note["seq"]:
            seqs[key].append(note["seq"])
    assert all(len(ids) == 1 for ids in bodies_by_key.values())  # one key, one notification
    for user in ("bob", "carol"):
        for conv in CONVS:
            assert seqs[(user, conv)] == sorted(set(seqs[(user, conv)])), (user, conv)
            assert seqs[(user, conv)][-1] == PER_CONV, (user, conv)
    assert "notifier" in log.read_text() and "active" in log.read_text()
    store.close()
