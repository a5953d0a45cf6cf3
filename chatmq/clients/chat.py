"""A small, typed chatmq device client on paho-mqtt.

It gets the protocol right for the caller: the presence last will with a fresh connection id per
connection, heartbeats, the subscriptions a conversation needs (again after every reconnect), an
outbox that resends unacked sends with the same client_msg_id, and catch-up through the history
API (or, without HTTP, the same pages over MQTT) so entries reach the application in seq order,
exactly once, across lost connections. Replies, edits, deletes and reactions go through the same
outbox; delivered receipts go out by themselves, read receipts on request, and the other members'
markers are kept (clients.receipts).

Threads: paho's network loop only parses and routes; anything that blocks (waiting for a SUBACK,
HTTP catch-up) runs on one worker thread; a ticker thread sends heartbeats and retries.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chatmq.clients.catchup import Message, Sequencer
from chatmq.clients.events import Ack, AckTimeout, ConnectRefused, Event
from chatmq.clients.history import ApiError, HistoryClient, HistorySource, MqttHistory
from chatmq.clients.outbox import Outbox, Transmission
from chatmq.clients.receipts import Marker, Receipts
from chatmq.clients.state import LocalState, QueuedSend
from chatmq.core import protocol
from chatmq.core.ids import require_id
from chatmq.core.mqtt.codec import publish_size
from chatmq.core.netutil import disable_nagle
from chatmq.core.protocol import TopicKind, parse_topic

__all__ = ["Ack", "AckTimeout", "ChatClient", "ConnectRefused", "ConnectionListener", "Event", "Listener"]

log = logging.getLogger("chatmq.client")

Listener = Callable[[Event], None]
AckListener = Callable[[Ack], None]
AckTimeoutListener = Callable[[AckTimeout], None]
ConnectionListener = Callable[[bool, str], None]
_HISTORY_PAGE = 200


class ChatClient:
    """One device connection. Use as a context manager or call connect()/close().

    ``api_url`` enables catch-up (history API); without it, ``history_over_mqtt=True`` asks the
    bridge for the same pages over the MQTT connection, else gaps are skipped. ``state_file`` keeps
    the outbox and the per-conversation cursors on disk, so a restarted process resumes both.
    ``auto_delivered`` sends a delivered receipt for what reaches the application (coalesced every
    ``receipt_delay`` seconds); ``mark_read`` sends read receipts. A send without an ack
    ``ack_timeout`` seconds after it was queued is reported once to ``on_ack_timeout`` listeners (and
    still resent until acked); None turns that off.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str | None = None,
        *,
        token: str | None = None,
        device: str = "default",
        transport: Literal["tcp", "websockets"] = "tcp",
        tls: ssl.SSLContext | bool | None = None,
        api_url: str | None = None,
        state_file: str | Path | None = None,
        heartbeat_interval: float = 30.0,
        keepalive: int = 60,
        resend_after: float = 10.0,
        ack_timeout: float | None = 30.0,
        reconnect_delay: tuple[float, float] = (0.5, 30.0),
        ws_path: str = "/mqtt",
        queue_events: bool = True,
        max_packet_bytes: int = protocol.DEFAULT_MAX_PACKET_BYTES,
        history_over_mqtt: bool = False,
        auto_delivered: bool = True,
        receipt_delay: float = 0.25,
    ) -> None:
        if password is None and token is None:
            raise ValueError("a password or a token is needed")
        self.user, self.device = require_id(user, "user"), require_id(device, "device")
        self.host, self.port, self.keepalive = host, port, keepalive
        self.heartbeat_interval = heartbeat_interval
        self.max_packet_bytes = max_packet_bytes  # the broker's CHATMQ_MAX_PACKET_BYTES
        self.conn = uuid.uuid4().hex  # identifies this connection in presence, so a late will is ignored
        self.events: queue.Queue[Event] = queue.Queue()
        self._queue_events = queue_events
        self._listeners: list[tuple[TopicKind | None, bool, Listener]] = []
        self._ack_listeners: list[AckListener] = []
        self._ack_timeout_listeners: list[AckTimeoutListener] = []
        self._connection_listeners: list[ConnectionListener] = []

        tls_context = ssl.create_default_context() if tls is True else (tls or None)
        self.api: HistoryClient | None = None
        self.history: HistorySource | None = None
        self._mqtt_history: MqttHistory | None = None
        if api_url is not None:
            self.api = self.history = HistoryClient(api_url, user, password, token=token, tls=tls_context)
        elif history_over_mqtt:
            self._mqtt_history = MqttHistory(self._publish_history_request)
            self.history = self._mqtt_history
        self.auto_delivered = auto_delivered
        self.receipt_delay = receipt_delay
        self.receipts = Receipts()

        owner = f"{user}.{device}"
        self._state = LocalState(state_file)
        self._owner = owner
        self.outbox = Outbox(self._state, owner, self._publish_send, resend_after=resend_after,
                             ack_timeout=ack_timeout)
        self.resumed: list[Future[Ack]] = self.outbox.restore()  # sends a previous process left unacked

        self._lock = threading.Lock()  # subscriptions and SUBACK bookkeeping
        self._deliver = threading.RLock()  # sequencers + dispatch: keeps delivery order across threads
        self._convs: dict[str, Sequencer] = {}
        self._needs_catchup: set[str] = set()
        self._catchup_queued: set[str] = set()
        self._watched: set[str] = set()
        self._extra: dict[str, int] = {}
        self._suback: dict[int, tuple[threading.Event, list[Any]]] = {}

        self._connack = threading.Event()
        self._connected = threading.Event()
        self._ready = threading.Event()  # connected and set up (subscribed again): resends may go out
        self._connect_refusal: str | None = None
        self._setup: Future[None] | None = None
        self._closing = threading.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chatmq-{owner}")
        self._ticker: threading.Thread | None = None

        self._mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=owner, transport=transport)
        self._mqtt.username_pw_set(user, token if token is not None else password)  # a token checks cheaper
        if transport == "websockets":
            self._mqtt.ws_set_options(path=ws_path)
        if tls_context is not None:
            self._mqtt.tls_set_context(tls_context)
        self._mqtt.reconnect_delay_set(*reconnect_delay)  # type: ignore[arg-type]  # floats work
        self._set_will()
        self._mqtt.on_socket_open = lambda _client, _userdata, sock: disable_nagle(sock)  # small, urgent packets
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_message = self._on_message
        self._mqtt.on_subscribe = self._on_subscribe

    # --- lifecycle ----------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> ChatClient:
        """Connect, subscribe to acks, announce presence and resend what the outbox holds.

        Idempotent: a second call (e.g. ``with client:`` on a connected client) is a no-op; calling
        paho's connect() again would open a second socket and drop the first one's in-flight work.
        """
        if self._ticker is not None:
            return self
        self._mqtt.connect(self.host, self.port, keepalive=self.keepalive)
        self._mqtt.loop_start()
        if not self._connack.wait(timeout) or self._connect_refusal is not None:
            self._closing.set()
            self._mqtt.loop_stop()
            raise ConnectRefused(self._connect_refusal or "timed out waiting for CONNACK")
        setup = self._setup
        assert setup is not None
        try:
            setup.result(timeout)
        except BaseException:
            self.close(abrupt=True)
            raise
        self._ticker = threading.Thread(target=self._tick, name=f"ticker-{self._owner}", daemon=True)
        self._ticker.start()
        return self

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every send is acked or rejected; False if some are still pending."""
        deadline = time.monotonic() + timeout
        while len(self.outbox) and time.monotonic() < deadline:
            time.sleep(0.02)
        return not len(self.outbox)

    def close(self, *, abrupt: bool = False) -> None:
        """Disconnect. ``abrupt=True`` drops the socket without DISCONNECT, so the will fires.

        Unacked sends stay in the state file (if any) for the next process; their futures fail here.
        """
        self._closing.set()
        if abrupt:
            sock = self._mqtt.socket()
            if sock is not None:
                sock.close()
        elif self._connected.is_set():
            # if the connection went away meanwhile, the will says offline instead
            with contextlib.suppress(RuntimeError, ValueError):
                self._publish_presence("offline").wait_for_publish(2)
            self._mqtt.disconnect()
        self._mqtt.loop_stop()
        if self._ticker is not None:
            self._ticker.join(5)
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.outbox.fail_all(ConnectionError("client closed before the ack arrived"))
        self._state.close()

    def __enter__(self) -> ChatClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- conversations --------------------------------------------------------------------------
    def join(self, conv: str, *, after: int | None = None) -> None:
        """Subscribe to a conversation's messages and typing indicators.

        Delivery starts after seq ``after`` if given, else after this device's saved cursor, else
        (with the history API) after the conversation's current last message, else with the first
        live message. Anything between the start and the live stream is fetched from history.
        """
        require_id(conv, "conversation")
        start = after if after is not None else self._state.cursor(self._owner, conv)
        with self._deliver:
            self._convs[conv] = Sequencer(strict=self.history is not None)
        try:
            # offline right now: the reconnect set-up subscribes every joined conversation
            with contextlib.suppress(ConnectionError):
                self._subscribe_and_wait(_conv_topics(conv))
            if self.api is not None:
                self.receipts.seed(conv, self.api.receipts(conv))
            if self.history is not None and start is None:
                start = self.history.last_seq(conv)
        except BaseException:
            self._forget(conv)
            raise
        if start is not None:
            with self._deliver:
                self._dispatch_messages(self._convs[conv].start(start))
            self._schedule_catchup(conv)

    def leave(self, conv: str) -> None:
        self._forget(conv)
        self.receipts.forget(conv)
        self._mqtt.unsubscribe([topic for topic, _qos in _conv_topics(conv)])

    def watch_presence(self, user: str) -> None:
        """Receive ``presence/{user}`` (retained: the current state arrives at once)."""
        require_id(user, "user")
        with self._lock:
            self._watched.add(user)
        self._subscribe_and_wait([(protocol.presence_topic(user), protocol.QOS_PRESENCE)])

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """A topic outside contract v1 (e.g. a future receipts topic), kept across reconnects.
        Its messages arrive as Events with ``kind`` None unless the topic is a known kind."""
        with self._lock:
            self._extra[topic] = qos
        self._subscribe_and_wait([(topic, qos)])

    def joined(self) -> dict[str, int | None]:
        """Each joined conversation and the last seq delivered to the application."""
        with self._deliver:
            return {conv: seqr.last for conv, seqr in self._convs.items()}

    # --- sending ------------------------------------------------------------------------------
    def send(
        self,
        conv: str,
        body: str,
        *,
        client_msg_id: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        reply_to: int | None = None,
    ) -> Future[Ack]:
        """Queue a message; the Future resolves with the server's received or rejected ack.

        The send is retried (same client_msg_id) across reconnects until an ack arrives, so it is
        stored exactly once. ``attachments`` go on the wire as given (e.g. what POST /v1/media returned).
        ``reply_to`` makes it a reply to the message with that seq. A send (of any kind) whose MQTT
        packet would exceed ``max_packet_bytes`` is never published (the broker would close the
        connection without an answer, and every resend would again): its Future resolves at once
        with a ``rejected`` ack, code ``too_large``, made here.
        """
        payload: dict[str, object] = {"body": body}
        if attachments:
            payload["attachments"] = attachments
        if reply_to is not None:
            payload["reply_to"] = reply_to
        return self._queue(conv, payload, client_msg_id)

    def edit(self, conv: str, seq: int, body: str, *, client_msg_id: str | None = None) -> Future[Ack]:
        """New text for your message ``seq`` (acked like a send, with the edit's own seq)."""
        return self._queue(conv, {"kind": "edit", "target": seq, "body": body}, client_msg_id)

    def delete(self, conv: str, seq: int, *, client_msg_id: str | None = None) -> Future[Ack]:
        """Delete message ``seq`` (yours, or any if you own the conversation): it is erased."""
        return self._queue(conv, {"kind": "delete", "target": seq}, client_msg_id)

    def react(self, conv: str, seq: int, emoji: str, *, client_msg_id: str | None = None) -> Future[Ack]:
        return self._queue(conv, {"kind": "react", "target": seq, "emoji": emoji}, client_msg_id)

    def unreact(self, conv: str, seq: int, emoji: str, *, client_msg_id: str | None = None) -> Future[Ack]:
        return self._queue(conv, {"kind": "unreact", "target": seq, "emoji": emoji}, client_msg_id)

    def _queue(self, conv: str, entry: dict[str, object], client_msg_id: str | None) -> Future[Ack]:
        require_id(conv, "conversation")
        cmid = client_msg_id or uuid.uuid4().hex
        payload = {"client_msg_id": cmid, **entry}
        size = publish_size(protocol.send_topic(conv, self.user), len(orjson.dumps(payload)), 1)
        if size > self.max_packet_bytes:
            message = f"the send is a {size}-byte MQTT packet; the broker takes at most {self.max_packet_bytes}"
            return self._refuse_locally(Ack(cmid, conv, "rejected", error={"code": "too_large", "message": message}))
        return self.outbox.add(QueuedSend(cmid, conv, payload, time.time()))

    # --- receipts -----------------------------------------------------------------------------
    def mark_read(self, conv: str, seq: int | None = None) -> bool:
        """Tell the conversation you have read everything up to ``seq`` (default: the last entry
        delivered to the application). Cumulative: False if nothing new to say."""
        if seq is None:
            with self._deliver:
                seqr = self._convs.get(conv)
                seq = seqr.last if seqr is not None else None
        if not seq or not self.receipts.want(conv, "read", seq):
            return False
        self._send_receipts()
        return True

    def markers(self, conv: str) -> dict[str, Marker]:
        """Every member's delivered and read markers as last announced (members never seen: absent)."""
        return self.receipts.of(conv)

    def _refuse_locally(self, ack: Ack) -> Future[Ack]:
        refused: Future[Ack] = Future()
        refused.set_result(ack)
        for listener in self._ack_listeners:
            _safely(listener, ack)
        return refused

    def typing(self, conv: str, typing: bool = True) -> None:
        self._mqtt.publish(
            protocol.typing_topic(conv, self.user), orjson.dumps({"typing": typing}), qos=protocol.QOS_TYPING
        )

    # --- receiving ----------------------------------------------------------------------------
    def add_listener(self, listener: Listener, kind: TopicKind | None = None, *, every: bool = False) -> Listener:
        """Call ``listener`` for events of ``kind``; ``every=True`` for all events (the generic hook).
        Listeners run on the client's threads: keep them short and do not block."""
        self._listeners.append((kind, every, listener))
        return listener

    def on_message(self, listener: Listener) -> Listener:
        return self.add_listener(listener, TopicKind.MSG)

    def on_typing(self, listener: Listener) -> Listener:
        return self.add_listener(listener, TopicKind.TYPING)

    def on_presence(self, listener: Listener) -> Listener:
        return self.add_listener(listener, TopicKind.USER_PRESENCE)

    def on_receipt(self, listener: Listener) -> Listener:
        """A member's marker moved forward (``chat/{conv}/receipts``); ``markers(conv)`` has them all."""
        return self.add_listener(listener, TopicKind.RECEIPTS)

    def on_event(self, listener: Listener) -> Listener:
        return self.add_listener(listener, every=True)

    def on_ack(self, listener: AckListener) -> AckListener:
        self._ack_listeners.append(listener)
        return listener

    def on_ack_timeout(self, listener: AckTimeoutListener) -> AckTimeoutListener:
        """Call ``listener(AckTimeout)`` once for each send still unacked ``ack_timeout`` seconds after
        it was queued (for a send a previous process left, after this client restored it), whether
        connected or not. The send is not given up: it is resent with the same client_msg_id until
        the server acks it, and its Future and ``on_ack`` report that ack as usual. Runs on the
        client's ticker thread (started by connect()): keep it short."""
        self._ack_timeout_listeners.append(listener)
        return listener

    def on_connection(self, listener: ConnectionListener) -> ConnectionListener:
        """Call ``listener(True, "")`` each time the broker accepts a connection (the client then
        renews the subscriptions, announces presence and resends unacked sends) and
        ``listener(False, reason)`` once when an accepted connection is lost (the client keeps
        trying to reconnect: failed attempts are not reported); not when close() ends it. Runs on
        the network thread: keep it short."""
        self._connection_listeners.append(listener)
        return listener

    def next_event(self, timeout: float = 5.0) -> Event:
        """The next incoming event; raises queue.Empty after ``timeout`` seconds."""
        return self.events.get(timeout=timeout)

    def iter_events(self, timeout: float | None = None) -> Iterator[Event]:
        """Events as they come; stops when the client closes or after ``timeout`` idle seconds."""
        while not self._closing.is_set():
            try:
                yield self.events.get(timeout=0.2 if timeout is None else min(timeout, 0.2))
            except queue.Empty:
                if timeout is not None:
                    timeout -= 0.2
                    if timeout <= 0:
                        return

    # --- connection internals -------------------------------------------------------------------
    def _set_will(self) -> None:
        self._mqtt.will_set(
            protocol.device_presence_topic(self.user, self.device),
            orjson.dumps({"status": "offline", "conn": self.conn}),
            qos=protocol.QOS_PRESENCE,
        )

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._connect_refusal = str(reason)
            self._connack.set()
            return
        self._ready.clear()
        self._connected.set()
        if not self._closing.is_set():
            self._setup = self._worker.submit(self._after_connect)
            for listener in self._connection_listeners:  # before anything this connection brings in
                _safely(listener, True, "")
        self._connack.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        was_connected = self._connected.is_set()  # else a reconnect attempt that failed
        self._ready.clear()
        self._connected.clear()
        if self._closing.is_set():
            return
        log.info("%s disconnected (%s); paho reconnects", self._owner, reason)
        self.conn = uuid.uuid4().hex  # the next connection has its own id, so this one's will can't hurt it
        self._set_will()
        if was_connected:
            for listener in self._connection_listeners:
                _safely(listener, False, str(reason))

    def _after_connect(self) -> None:
        """Runs on the worker after each CONNACK: the session is clean, so set everything up again."""
        with self._lock:
            topics = [(protocol.ack_topic(self.user), protocol.QOS_ACK)]
            if self._mqtt_history is not None:
                topics.append((protocol.history_response_topic(self.user), protocol.QOS_HISTORY))
            topics += [(protocol.presence_topic(u), protocol.QOS_PRESENCE) for u in sorted(self._watched)]
            topics += list(self._extra.items())
        with self._deliver:
            convs = list(self._convs)
        for conv in convs:
            topics += _conv_topics(conv)
        self._subscribe_and_wait(topics)
        self._publish_presence("online")
        self._ready.set()
        self.outbox.flush(reconnected=True)
        self._send_receipts()
        for conv in convs:
            self._needs_catchup.add(conv)
            self._catch_up(conv)

    def _tick(self) -> None:
        step = max(0.05, min(1.0, self.heartbeat_interval, self.outbox.resend_after / 2, self.receipt_delay))
        next_heartbeat = time.monotonic() + self.heartbeat_interval
        while not self._closing.wait(step):
            self._report_overdue()  # offline too: that is when an app most needs to say "not sent"
            if not self._ready.is_set():  # not before the set-up subscribed acks again: theirs would be lost
                continue
            if time.monotonic() >= next_heartbeat:
                self._publish_presence("online")
                next_heartbeat = time.monotonic() + self.heartbeat_interval
            self.outbox.flush()
            self._send_receipts()
            with self._deliver:
                retry = [c for c, s in self._convs.items() if c in self._needs_catchup or s.missing_after() is not None]
            for conv in retry:
                self._schedule_catchup(conv)

    def _report_overdue(self) -> None:
        for overdue in self.outbox.overdue():
            item = overdue.item
            log.info("%s: send %s to %s not acked after %.1f s; still resending", self._owner, item.client_msg_id,
                     item.conv, overdue.waited)
            timeout = AckTimeout(item.client_msg_id, item.conv, overdue.waited, self.connected)
            for listener in self._ack_timeout_listeners:
                _safely(listener, timeout)

    def _publish_presence(self, status: str) -> mqtt.MQTTMessageInfo:
        return self._mqtt.publish(
            protocol.device_presence_topic(self.user, self.device),
            orjson.dumps({"status": status, "conn": self.conn}),
            qos=protocol.QOS_PRESENCE,
        )

    def _send_receipts(self) -> None:
        """Publish the receipts due; one that cannot go out now (offline) stays due."""
        for conv, status, seq in self.receipts.take_due():
            info = self._mqtt.publish(protocol.receipt_topic(conv, self.user),
                                      orjson.dumps({"seq": seq, "status": status}), qos=protocol.QOS_RECEIPT)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.receipts.sent(conv, status, seq)
            else:
                self.receipts.retry(conv, status, seq)

    def _publish_history_request(self, payload: bytes) -> bool:
        info = self._mqtt.publish(protocol.history_request_topic(self.user), payload, qos=protocol.QOS_HISTORY)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _publish_send(self, item: QueuedSend) -> Transmission:
        return self._mqtt.publish(
            protocol.send_topic(item.conv, self.user), orjson.dumps(item.payload), qos=protocol.QOS_SEND
        )

    def _subscribe_and_wait(self, topics: list[tuple[str, int]], timeout: float = 10.0) -> None:
        """One SUBSCRIBE per topic (amqtt 0.12 mishandles multi-topic SUBSCRIBEs), all in flight at once.

        If the connection drops before the SUBACKs arrive, the reconnect set-up subscribes every
        registered topic again; a set-up that completes meanwhile therefore counts as the answer.
        """
        setup_before = self._setup
        waits: list[tuple[str, threading.Event, list[Any]]] = []
        for topic, qos in topics:
            done, codes = threading.Event(), []
            with self._lock:  # paho may deliver the SUBACK before subscribe() returns its mid
                result, mid = self._mqtt.subscribe(topic, qos)
                if mid is None:
                    raise ConnectionError(f"not connected ({result}); subscriptions are renewed on reconnect")
                self._suback[mid] = (done, codes)
            waits.append((topic, done, codes))
        deadline = time.monotonic() + timeout
        refused = []
        for topic, done, codes in waits:
            while not done.wait(0.1):
                renewal = self._setup
                if renewal is not setup_before and renewal is not None and renewal.done() \
                        and renewal.exception() is None:
                    return  # a reconnect set-up subscribed everything again, this topic included
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no SUBACK for {topic}")
            if any(code.is_failure for code in codes):
                refused.append(topic)
        if refused:
            raise PermissionError(f"subscription to {', '.join(refused)} refused")

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reason_codes: list[Any], _p: Any) -> None:
        with self._lock:
            done, codes = self._suback.pop(mid, (None, []))
        codes.extend(reason_codes)
        if done is not None:
            done.set()

    # --- receiving internals --------------------------------------------------------------------
    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(message.topic)
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            log.warning("ignored a non-JSON payload on %s", message.topic)
            return
        if not isinstance(payload, dict):
            return
        kind = parsed.kind if parsed is not None else None
        if kind is TopicKind.ACK:
            self._on_ack(payload)
        elif kind is TopicKind.MSG and parsed is not None and parsed.conv is not None:
            self._on_chat_message(parsed.conv, payload)
        elif kind is TopicKind.HISTORY_RESPONSE and self._mqtt_history is not None:
            self._mqtt_history.answered(payload)
        else:
            if kind is TopicKind.RECEIPTS and parsed is not None and parsed.conv is not None:
                self.receipts.announced(parsed.conv, payload)
            elif kind is TopicKind.EVENTS and payload.get("event") == "conversation_removed":
                self._left(payload.get("conv"))
            self._dispatch(Event(kind, message.topic, payload))

    def _left(self, conv: object) -> None:
        """Removed from a joined conversation (``user/{me}/events``): stop asking for it, so no
        reconnect subscribes to it again (a broker refuses that; RabbitMQ closes the connection)."""
        with self._deliver:
            joined = isinstance(conv, str) and conv in self._convs
        if joined:
            self.leave(str(conv))

    def _on_ack(self, payload: dict[str, Any]) -> None:
        try:
            ack = Ack.from_payload(payload)
        except KeyError:
            return
        if self.outbox.settle(ack):  # acks for the user's other devices land here too: not ours, skip
            for listener in self._ack_listeners:
                _safely(listener, ack)

    def _on_chat_message(self, conv: str, payload: Message) -> None:
        with self._deliver:
            seqr = self._convs.get(conv)
            if seqr is None:
                return
            self._dispatch_messages(seqr.offer(payload))
            gap = seqr.missing_after() is not None
        if gap:
            self._schedule_catchup(conv)

    def _schedule_catchup(self, conv: str) -> None:
        if self.history is None or self._closing.is_set():
            return
        with self._lock:
            if conv in self._catchup_queued:
                return
            self._catchup_queued.add(conv)
        self._needs_catchup.add(conv)
        with contextlib.suppress(RuntimeError):  # the worker shut down: closing
            self._worker.submit(self._catch_up, conv)

    def _catch_up(self, conv: str) -> None:
        """Fetch everything after the last delivered seq, page by page, and deliver it in order."""
        with self._lock:
            self._catchup_queued.discard(conv)
        if self.history is None:
            return
        try:
            while not self._closing.is_set():
                with self._deliver:
                    seqr = self._convs.get(conv)
                    after = seqr.last if seqr is not None else None
                if after is None:
                    return
                messages, has_more = self.history.messages(conv, after=after, limit=_HISTORY_PAGE)
                with self._deliver:
                    if self._convs.get(conv) is not seqr:
                        return  # left (or re-joined) meanwhile
                    self._dispatch_messages(seqr.take_history(after, messages))
                if not has_more:
                    self._needs_catchup.discard(conv)
                    return
        except ApiError as exc:
            log.warning("catch-up of %s failed (%s); retrying", conv, exc)

    def _dispatch_messages(self, messages: list[Message]) -> None:
        for message in messages:
            conv = str(message.get("conv"))
            self._dispatch(Event(TopicKind.MSG, protocol.msg_topic(conv), message))
        if messages:
            last = messages[-1]
            self._state.set_cursor(self._owner, str(last.get("conv")), int(last["seq"]))
            if self.auto_delivered:  # sent by the ticker within receipt_delay, one per burst
                self.receipts.want(str(last.get("conv")), "delivered", int(last["seq"]))

    def _dispatch(self, event: Event) -> None:
        if self._queue_events:
            self.events.put(event)
        for kind, every, listener in self._listeners:
            if every or kind is event.kind:
                _safely(listener, event)

    def _forget(self, conv: str) -> None:
        with self._deliver:
            self._convs.pop(conv, None)
        self._needs_catchup.discard(conv)


def _typing_filter(conv: str) -> str:
    return f"chat/{conv}/typing/+"


def _conv_topics(conv: str) -> list[tuple[str, int]]:
    """What a joined conversation subscribes to: its entries, typing and receipts."""
    return [(protocol.msg_topic(conv), protocol.QOS_MSG), (_typing_filter(conv), protocol.QOS_TYPING),
            (protocol.receipts_topic(conv), protocol.QOS_RECEIPTS)]


def _safely(listener: Callable[..., None], *args: Any) -> None:
    try:
        listener(*args)
    except Exception:
        log.exception("a client listener failed")
