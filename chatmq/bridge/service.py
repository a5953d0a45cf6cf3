"""The bridge's MQTT wiring: one persistent session, routing inbound messages to workers.

The session is persistent (clean_session=False, fixed client id) so the broker queues sends while
the bridge is down, and acks are manual so the broker only forgets a send once it is stored and
its ack is on the wire. The MQTT client's thread (chatmq/bridge/mqtt: asyncio, the project's codec) only
parses and routes; store and Redis I/O happen on the writer and presence threads.

With a worker id (``chatmq bridge --worker-id ID``) the bridge is one of several workers: it
handles only the conversations (and presence users) of the partitions whose lease it holds
(chatmq/bridge/partitions.py); without one it is the single bridge and handles everything.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from chatmq.bridge.events import EventPublisher
from chatmq.bridge.history import HistoryWorker, InboundRequest
from chatmq.bridge.httpsend import HttpSends
from chatmq.bridge.mqtt import Message, MqttClient, MqttError
from chatmq.bridge.outbox import Outbox
from chatmq.bridge.partitions import PartitionGate
from chatmq.bridge.presence import DeviceEvent, PresenceTracker
from chatmq.bridge.receipts import InboundReceipt, ReceiptWorker
from chatmq.bridge.ticker import Ticker
from chatmq.bridge.writer import Inbound, Writer
from chatmq.core import redisconn
from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER, Settings
from chatmq.core.httpsend import RETRY_STATUS, SINGLE_BRIDGE, SendRequest
from chatmq.core.leases import Leases, WorkerRegistry
from chatmq.core.liveness import BRIDGE_ALIVE_INTERVAL_S, BRIDGE_ALIVE_KEY, BRIDGE_ALIVE_TTL_MS
from chatmq.core.media import MediaStore, open_media_store
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import Fence
from chatmq.core.mqtt.codec import SUBACK_FAILURE
from chatmq.core.partitions import check_worker_id
from chatmq.core.presence import Presence
from chatmq.core.protocol import (
    BRIDGE_SUBSCRIPTIONS,
    PayloadError,
    Topic,
    TopicKind,
    ack_topic,
    events_topic,
    parse_receipt,
    parse_send,
    parse_topic,
    receipt_rejected,
    rejected_ack,
)
from chatmq.core.ratelimit import MessageRate
from chatmq.core.store import NewMessage, ReceiptUpdate, Store, open_store
from chatmq.core.store.base import now_ms

log = logging.getLogger(__name__)


CLIENT_ID = "chatmq-bridge"
KEEPALIVE_S = 30
WORKER_CLIENT_ID = "chatmq-bridge-{worker}"
# Topics handled by one worker per partition: sends and receipts by conversation, presence and
# history requests by user.
_PARTITIONED = (TopicKind.SEND, TopicKind.RECEIPT, TopicKind.DEVICE_PRESENCE, TopicKind.HISTORY_REQUEST)
_BY_USER = (TopicKind.DEVICE_PRESENCE, TopicKind.HISTORY_REQUEST)


class Bridge:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        redis_client: redis.Redis,
        *,
        client_id: str = CLIENT_ID,
        store_label: str | None = None,
        media: MediaStore | None = None,
        worker_id: str | None = None,
        persistent_session: bool = True,
    ) -> None:
        self._settings = settings
        self._store = store
        self._redis = redis_client
        self._secret = settings.load_secret()
        self._store_label = store_label or type(store).__name__
        self._connected = threading.Event()
        self._closing = False

        if worker_id is not None:
            client_id = WORKER_CLIENT_ID.format(worker=worker_id)
        self._client = MqttClient(
            settings.broker_host,
            settings.resolved_broker_port,
            client_id=client_id,
            clean_session=not persistent_session,
            keepalive_s=KEEPALIVE_S,
            subscriptions=BRIDGE_SUBSCRIPTIONS,
            credentials=self._credentials,
            on_message=self._on_message,
            on_connect=self._on_connect,
            on_subscribe=self._on_subscribe,
            on_disconnect=self._on_disconnect,
            name="bridge-mqtt",
        )
        self._outbox = Outbox(self._client)
        self._gate = None if worker_id is None else self._partition_gate(worker_id)
        self._membership = MembershipView(store)
        self._fence = Fence(store.membership_version, self._outbox.publish)
        # Attachments are checked against the uploads (chatmq.core.media); one we open, we close.
        self._owned_media = None if media is not None else open_media_store(settings)
        self._writer = Writer(
            store, self._membership, self._outbox, fanout_read_threshold=settings.fanout_read_threshold,
            media=media or self._owned_media,
            rate=MessageRate(redis_client, settings.messages_per_s, settings.messages_burst),
            may_write=None if self._gate is None else self._gate.owns, fence=self._fence,
            edit_window_ms=settings.edit_window_s * 1000, commit_delay_s=settings.bridge_commit_delay_ms / 1000,
        )
        self._receipts = ReceiptWorker(store, self._membership, self._outbox, fence=self._fence)
        self._history = HistoryWorker(store, self._outbox, rate=MessageRate(
            redis_client, settings.history_requests_per_s, settings.history_requests_burst, what="history"))
        self._events = EventPublisher(store, self._outbox)
        self._presence = PresenceTracker(
            Presence(redis_client, int(settings.presence_ttl_s * 1000), settings.presence_devices_per_user),
            self._outbox,
            owns_user=None if self._gate is None else self._gate.owns,
        )
        if self._gate is not None:
            self._gate.workers = [self._writer, self._receipts]  # drained before a partition is handed over
        self._tickers = [
            Ticker("membership refresh", settings.membership_refresh_s, self._membership.refresh),
            Ticker("liveness beat", BRIDGE_ALIVE_INTERVAL_S, self._beat),
            Ticker("conversation events", settings.membership_refresh_s, self._publish_events),
        ]
        self._alive_value = f"{socket.gethostname()}:{os.getpid()}"
        self._http_sends = HttpSends(redis_client, worker_id or SINGLE_BRIDGE, self._on_http_send)

    def _partition_gate(self, worker_id: str) -> PartitionGate:
        settings = self._settings
        ttl_ms = int(settings.bridge_lease_s * 1000)
        return PartitionGate(
            WorkerRegistry(self._redis, worker_id, settings.bridge_partitions, ttl_ms),
            Leases(self._redis, worker_id, ttl_ms),
            settings.bridge_partitions,
            publish_mark=self._outbox.mark,
            publishes_confirmed=self._outbox.confirmed,
            ready=self._connected.is_set,
            interval_s=settings.bridge_lease_s / 5,
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def partitions(self) -> PartitionGate | None:
        """The partition gate of a worker (None for the single bridge)."""
        return self._gate

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected to the broker and subscribed."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background (retrying forever) and start the worker threads."""
        self._tickers[0].run_once()  # know the conversations before the first send arrives
        self._writer.start()
        self._receipts.start()
        self._history.start()
        self._presence.start()
        for ticker in self._tickers:
            ticker.start()
        if self._gate is not None:
            self._gate.start()
        self._client.start()
        self._http_sends.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish in-flight writes and acks, then disconnect; later sends wait in the broker."""
        if self._closing:
            return
        if self._gate is not None and not self._gate.leave(timeout):  # hand over, then drain
            log.warning("bridge worker %s stopped before handing over every partition", self._gate.worker)
        self._closing = True
        self._http_sends.stop(timeout)  # what is still queued in Redis waits for the next bridge
        self._writer.stop(timeout)
        self._receipts.stop(timeout)
        self._history.stop(timeout)
        self._presence.stop(timeout)
        for ticker in self._tickers:
            ticker.stop()
        if self._connected.is_set():
            self._outbox.flush(timeout)
        if self._gate is not None:
            self._gate.stop()
        self._client.stop()
        self._connected.clear()
        if self._owned_media is not None:
            self._owned_media.close()

    # --- MQTT callbacks (the client's thread) ----------------------------------------------------
    def _credentials(self) -> tuple[str | None, str | None]:
        # A fresh token on every attempt, so a bridge that ran past the token TTL still reconnects.
        password = self._settings.service_password  # brokers that cannot check tokens (Mosquitto)
        if not password:
            password = issue_token(self._secret, SERVICE_USER, self._settings.token_ttl_s, service=True).token
        return SERVICE_USER, password

    def _on_connect(self, session_present: bool) -> None:
        self._fence.reset()  # maybe another broker: announce the membership version again

    def _on_subscribe(self, return_codes: list[int]) -> None:
        refused = [topic for (topic, _), code in zip(BRIDGE_SUBSCRIPTIONS, return_codes, strict=False)
                   if code == SUBACK_FAILURE]  # fmt: skip
        if refused:
            log.error("broker refused the bridge's subscriptions: %s", refused)
            return
        self._connected.set()  # connected and subscribed: sends reach us from now on
        if self._gate is not None:
            self._gate.wake()  # join the workers now: hold our partitions' sends from the start
        log.info(
            "bridge connected to broker %s:%d store=%s redis=%s",
            self._settings.broker_host, self._settings.resolved_broker_port,
            self._store_label, _redis_label(self._redis),
        )  # fmt: skip

    def _on_disconnect(self, reason: MqttError | OSError) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("bridge lost the broker (%s); reconnecting", reason)

    def _on_message(self, msg: Message) -> None:
        if self._closing:
            return  # not PUBACKed: the broker redelivers it to the next session
        try:
            self._route(msg)
        except Exception:  # say what happened and free the slot
            log.exception("could not handle a message on %s; dropped", msg.topic)
            self._outbox.ack(msg.mid, msg.qos)

    def _route(self, msg: Message) -> None:
        topic = parse_topic(msg.topic)
        if self._gate is not None and topic is not None and topic.kind in _PARTITIONED:
            by_user = topic.kind in _BY_USER
            self._gate.offer(
                (topic.user if by_user else topic.conv) or "",
                partial(self._dispatch, topic, msg),
                partial(self._outbox.ack, msg.mid, msg.qos),
                # presence is soft state: the device's next heartbeat repeats it
                holdable=topic.kind is not TopicKind.DEVICE_PRESENCE,
            )
        else:
            self._dispatch(topic, msg)

    def _dispatch(self, topic: Topic | None, msg: Message) -> None:
        if msg.retain:
            # Delivered with retain set = a broker's stored copy handed to our new subscription: a
            # replay of old state, never a live send, receipt or presence (chatmq's broker keeps no
            # device publish; a stock broker may). Acknowledged and ignored.
            if topic is not None and topic.kind is not TopicKind.DEVICE_PRESENCE:
                log.warning("ignored a retained copy on %s (devices must publish with retain off)", msg.topic)
            self._outbox.ack(msg.mid, msg.qos)
        elif topic is not None and topic.kind is TopicKind.SEND:
            self._on_send(topic.conv or "", topic.user or "", msg)
        elif topic is not None and topic.kind is TopicKind.RECEIPT:
            self._on_receipt(topic.conv or "", topic.user or "", msg)
        elif topic is not None and topic.kind is TopicKind.HISTORY_REQUEST:
            self._history.submit(InboundRequest(topic.user or "", msg.payload, msg.mid, msg.qos))
        elif topic is not None and topic.kind is TopicKind.DEVICE_PRESENCE:
            self._presence.submit(DeviceEvent(topic.user or "", topic.device or "", msg.payload, msg.mid, msg.qos))
        else:
            self._outbox.ack(msg.mid, msg.qos)

    def _on_send(self, conv: str, sender: str, msg: Message) -> None:
        self._accept_send(conv, sender, msg.payload, msg.mid, msg.qos, redelivered=bool(msg.dup))

    def _accept_send(
        self, conv: str, sender: str, raw: bytes, mid: int, qos: int, *, redelivered: bool = False,
        reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:  # fmt: skip
        """Validate one send and queue it for the writer: from MQTT, or handed over by the API."""
        try:
            payload = parse_send(raw, self._settings.max_body_bytes, conv=conv)
        except PayloadError as exc:
            ack = rejected_ack(exc.client_msg_id or "", conv, exc.code, exc.message)
            if reply is not None:
                reply(ack)
            else:
                self._outbox.publish(ack_topic(sender), ack)
            self._outbox.ack(mid, qos)
            return
        entry = NewMessage.of(conv, sender, payload, int(time.time() * 1000))
        self._writer.submit(Inbound(entry, mid, qos, redelivered=redelivered, reply=reply))

    def _on_http_send(self, request: SendRequest) -> None:
        """A send the API handed over: the same validation, writer, idempotency and ack as MQTT."""
        reply = partial(self._http_sends.reply, request.id)
        deliver = partial(self._accept_send, request.conv, request.user, request.payload, 0, 0, reply=reply)
        if self._gate is None:
            deliver()
            return
        retry = {"conv": request.conv, "status": RETRY_STATUS}
        self._gate.offer(request.conv, deliver, partial(reply, retry))

    def _on_receipt(self, conv: str, user: str, msg: Message) -> None:
        try:
            payload = parse_receipt(msg.payload)
        except PayloadError as exc:
            refusal = receipt_rejected(conv, exc.code, exc.message, now_ms())
            self._outbox.publish(events_topic(user), refusal)
            self._outbox.ack(msg.mid, msg.qos)
            return
        update = ReceiptUpdate(conv=conv, user=user, seq=payload.seq, status=payload.status, ts=now_ms())
        self._receipts.submit(InboundReceipt(update, msg.mid, msg.qos))

    def _publish_events(self) -> None:
        # One publisher among the workers (partition 0's owner), so no event goes out twice.
        if self._connected.is_set() and (self._gate is None or self._gate.owns_partition(0)):
            self._events.publish_pending()

    # --- liveness --------------------------------------------------------------------------------
    def _beat(self) -> None:
        """Tell the API we are alive, but only while we can actually do our job."""
        if not self._connected.is_set():
            return
        self._store.ping()
        self._redis.set(BRIDGE_ALIVE_KEY, self._alive_value, px=BRIDGE_ALIVE_TTL_MS)


def _redis_label(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix:{kw['path']}"
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def redact(url: str) -> str:
    """A URL fit for a log line: any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


AUTO_WORKER_ID = "auto"


def resolve_worker_id(configured: str | None) -> str | None:
    """``auto`` becomes hostname-pid: a fresh id per process, so its MQTT session is not kept
    (nothing would ever resume it); a fixed id keeps its persistent session across restarts."""
    if configured is None or configured == "":
        return None
    if configured == AUTO_WORKER_ID:
        host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname()).lstrip("._-")[:40]
        return check_worker_id(f"{host or 'bridge'}-{os.getpid()}")
    return check_worker_id(configured)


# A chat message costs the bridge a few dozen short-lived objects (the MQTT message, the parsed
# payload, the outcome, two publishes), almost none in reference cycles: refcounting frees them,
# and collections at the default young-generation threshold (700 allocations) find next to nothing.
# Measured with bench/e2e.py, six interleaved pairs: 4,496 -> 4,705 msg/s at the median, bridge CPU
# per chat message 0.16 -> 0.15 ms. (The same on the broker showed no gain.)
GC_THRESHOLD = (100_000, 50, 100)


def tune_gc() -> None:
    """For the bridge process once it is set up: start-up objects out of every later scan
    (``gc.freeze``), and young collections every 100,000 allocations instead of 700."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run(settings: Settings) -> None:
    """Run the bridge until SIGINT or SIGTERM, then stop cleanly."""
    from chatmq.bridge.metrics import TimedStore, instrument, start_ops_server  # prometheus, only in the service

    store = open_store(settings.resolved_store_url)
    redis_client = redisconn.connect(settings.redis_url)
    worker_id = resolve_worker_id(settings.bridge_worker_id)
    bridge = Bridge(settings, TimedStore(store), redis_client, client_id=settings.bridge_client_id,
                    store_label=redact(settings.resolved_store_url), worker_id=worker_id,
                    persistent_session=settings.bridge_worker_id != AUTO_WORKER_ID)
    if worker_id is not None:
        log.info("bridge worker %s: %d partitions, lease %.1fs", worker_id, settings.bridge_partitions,
                 settings.bridge_lease_s)
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("bridge stopping (%s)", signal.Signals(signum).name)
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    instrument(bridge)
    ops = start_ops_server(bridge, settings.host, settings.bridge_metrics_port, store, redis_client)
    tune_gc()
    try:
        bridge.start()
        while not done.wait(1.0):
            pass
    finally:
        if ops is not None:
            ops.stop()
        bridge.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
        redis_client.close()
