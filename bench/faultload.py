"""A steady load of chat devices built on the client library, recording what was sent, acked and seen.

Every device is a ``ChatClient`` with the history API (catch-up) and a state file (its outbox
survives), so the load behaves like real devices: unacked sends are resent with the same
client_msg_id across reconnects, and messages missed while disconnected come back from history.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from chatmq.clients import Ack, ChatClient, Event
from chatmq.core.auth import hash_password
from chatmq.core.protocol import TopicKind
from chatmq.core.store import open_store

PASSWORD = "fault-harness-password"


@dataclass
class Record:
    """What the devices observed; the checker compares it with the store."""

    sent: dict[str, tuple[str, str]] = field(default_factory=dict)  # cmid -> (sender, conv)
    acks: dict[str, Ack] = field(default_factory=dict)  # cmid -> the ack its future resolved with
    failures: dict[str, str] = field(default_factory=dict)  # cmid -> why its future failed
    received: dict[tuple[str, str], list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (user, conv) -> [(seq, cmid)] in delivery order
    lock: threading.Lock = field(default_factory=threading.Lock)


def plan(users: int, convs: int, members: int) -> dict[str, list[str]]:
    """Conversation -> members: conversation i holds ``members`` consecutive users (wrapping)."""
    names = [f"u{i}" for i in range(users)]
    return {f"c{i}": sorted({names[(i + k) % users] for k in range(members)}) for i in range(convs)}


def provision(store_url: str, conversations: dict[str, list[str]]) -> None:
    store = open_store(store_url)
    try:
        secret = hash_password(PASSWORD)
        for user in sorted({m for ms in conversations.values() for m in ms}):
            store.create_user(user, secret)
        for conv, members in conversations.items():
            store.create_conversation(conv, members)
    finally:
        store.close()


class Load:
    """One device per user; ``run`` sends ``rate`` messages per second in total until stopped."""

    def __init__(self, mqtt_port: int, api_url: str, state_dir: Path, conversations: dict[str, list[str]],
                 rate: float, *, resend_after: float = 3.0, seed: int = 1, ws_port: int | None = None,
                 ws_path: str = "/mqtt", ws_users: frozenset[str] = frozenset()) -> None:
        self.conversations = conversations
        self.record = Record()
        self.rate = rate
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        state_dir.mkdir(parents=True, exist_ok=True)
        users = sorted({m for ms in conversations.values() for m in ms})
        self.convs_of = {u: [c for c, ms in conversations.items() if u in ms] for u in users}
        if ws_users and ws_port is None:
            raise ValueError("devices over WebSocket need ws_port")
        self.ws_users = ws_users  # these connect over MQTT over WebSocket, as browsers do

        def device(user: str) -> ChatClient:
            over_ws = user in ws_users
            return ChatClient(
                "127.0.0.1", (ws_port or 0) if over_ws else mqtt_port, user, PASSWORD, device="d", api_url=api_url,
                state_file=state_dir / f"{user}.db", heartbeat_interval=1.0, resend_after=resend_after,
                reconnect_delay=(0.2, 2.0), queue_events=False, transport="websockets" if over_ws else "tcp",
                ws_path=ws_path,
            )  # fmt: skip

        self.clients = {user: device(user) for user in users}

    def start(self) -> Load:
        for user, client in self.clients.items():
            client.add_listener(self._receiver(user), TopicKind.MSG)
            client.connect()
            for conv in self.convs_of[user]:
                client.join(conv, after=0)
        self._thread = threading.Thread(target=self._send_loop, name="fault-load", daemon=True)
        self._thread.start()
        return self

    def _receiver(self, user: str):  # type: ignore[no-untyped-def]
        def on_message(event: Event) -> None:
            payload = event.payload
            with self.record.lock:
                self.record.received[(user, str(payload["conv"]))].append(
                    (int(payload["seq"]), str(payload.get("client_msg_id", "")))
                )

        return on_message

    def _send_loop(self) -> None:
        users = sorted(self.clients)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            user = users[turn % len(users)]
            turn += 1
            conv = self._random.choice(self.convs_of[user])
            cmid = uuid.uuid4().hex
            with self.record.lock:
                self.record.sent[cmid] = (user, conv)
            future = self.clients[user].send(conv, f"m{turn}", client_msg_id=cmid)
            future.add_done_callback(self._settled(cmid))
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def burst(self, user: str, conv: str, count: int) -> None:
        """``count`` sends from one device to one conversation at once: the case where two writers of
        one conversation would interleave, so it puts the order of its publishes to the test."""
        for n in range(count):
            cmid = uuid.uuid4().hex
            with self.record.lock:
                self.record.sent[cmid] = (user, conv)
            self.clients[user].send(conv, f"burst{n}", client_msg_id=cmid).add_done_callback(self._settled(cmid))

    def _settled(self, cmid: str):  # type: ignore[no-untyped-def]
        def done(future: Future[Ack]) -> None:
            with self.record.lock:
                try:
                    self.record.acks[cmid] = future.result()
                except Exception as exc:  # closed before the ack: reported, never silently dropped
                    self.record.failures[cmid] = repr(exc)

        return done

    def stop_sending(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def drain(self, timeout: float) -> bool:
        """Until every send has its ack (resends included), or ``timeout``."""
        deadline = time.monotonic() + timeout
        return all(c.drain(max(0.0, deadline - time.monotonic())) for c in self.clients.values())

    def wait_delivered(self, expected: dict[str, int], timeout: float) -> bool:
        """Until every member has been handed seq 1..n of each conversation, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.record.lock:
                done = all(
                    len(self.record.received.get((u, c), ())) >= expected.get(c, 0)
                    for c, ms in self.conversations.items() for u in ms
                )  # fmt: skip
            if done:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.stop_sending()
        for client in self.clients.values():
            client.close()
