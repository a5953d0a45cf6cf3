"""The writer: the one thread that appends accepted sends to the store, then fans out and acks.

A send is any entry of the log: a message, or a change to one (edit, delete, react, unreact). The
store checks changes against the log as it stands and may refuse one (answered with a rejected
ack); a deletion's erased attachments are removed from the media store here, before the ack.

The MQTT client calls ``on_message`` on its own thread, which must never wait on a database; sends are
queued here instead. Whatever has queued up is written as one batch (one transaction), so a lone
message is written at once and a burst costs one commit. Order matters and is kept: items are
appended in arrival order, so each conversation's ``chat/{conv}/msg`` publishes leave in seq order.

Nothing is acknowledged before the append returned: if the store fails, the batch is retried with
backoff until it succeeds (or the bridge stops, leaving the sends un-PUBACKed so the broker
redelivers them to the next bridge session).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatmq.bridge.outbox import Outbox
from chatmq.bridge.worker import BatchWorker
from chatmq.core.httpsend import RETRY_STATUS
from chatmq.core.media.attachments import attached_media, attachment_refusal
from chatmq.core.media.base import MediaStore, erase_media
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import Fence
from chatmq.core.protocol import (
    DEFAULT_FANOUT_READ_THRESHOLD,
    FANOUT_READ,
    QOS_MSG,
    QOS_NOTICE,
    ErrorCode,
    ack_topic,
    fanout_mode,
    message_notice_of,
    msg_topic,
    received_ack,
    rejected_ack,
)
from chatmq.core.ratelimit import MessageRate
from chatmq.core.store.base import AppendResult, Message, NewMessage, NotFound, Store

log = logging.getLogger(__name__)

BATCH_MAX = 500


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed send waiting for the store, with what is needed to PUBACK it afterwards."""

    message: NewMessage
    mid: int
    qos: int
    redelivered: bool = False  # the broker's DUP flag: an earlier bridge session may have stored it
    reply: Callable[[dict[str, Any]], None] | None = None  # sent over HTTP: the ack goes here, not to MQTT


@dataclass(slots=True)
class _Outcome:
    result: AppendResult | None = None
    rejection: tuple[ErrorCode, str] | None = None
    broadcast_duplicate: bool = False
    dropped: bool = False  # our partition lease lapsed before the write: not stored, not answered


class Writer(BatchWorker[Inbound]):
    def __init__(
        self,
        store: Store,
        membership: MembershipView,
        outbox: Outbox,
        *,
        batch_max: int = BATCH_MAX,
        retry_min_s: float = 0.05,
        retry_max_s: float = 5.0,
        fanout_read_threshold: int = DEFAULT_FANOUT_READ_THRESHOLD,
        media: MediaStore | None = None,
        rate: MessageRate | None = None,
        may_write: Callable[[str], bool] | None = None,
        fence: Fence | None = None,
        edit_window_ms: int = 0,
        commit_delay_s: float = 0.0,
    ) -> None:
        super().__init__("bridge-writer")
        self.linger_s = commit_delay_s  # a group-commit window (Settings.bridge_commit_delay_ms)
        self._fence = fence  # the broker's membership view catches up before our publishes
        self._may_write = may_write  # partitioned workers: still the conversation's lease holder?
        self.batch_max = batch_max
        self._rate = rate  # per-sender send rate (None: unlimited)
        self._store = store
        self._media = media  # None: attachments are not checked (only for tests of other rules)
        self._fanout_read_threshold = fanout_read_threshold
        self._membership = membership
        self._outbox = outbox
        self._retry_min = retry_min_s
        self._retry_max = retry_max_s
        self._edit_window_ms = edit_window_ms

    # --- the thread ---------------------------------------------------------------------------
    def _handle(self, batch: list[Inbound]) -> None:
        outcomes = self._not_ours(batch)  # index in batch -> settled outcome
        outcomes.update(self._over_rate(batch, outcomes))
        delay = self._retry_min
        attempt = 0
        while True:
            try:
                self._settle(batch, outcomes, retried=attempt > 0)
                if self._fence is not None:
                    self._fence.after_write()
                break
            except Exception as exc:
                attempt += 1
                if attempt == 1:
                    log.warning("store append failed (%s); retrying %d sends with backoff", exc, len(batch))
                if self._stopping.wait(delay):
                    unsettled = len(batch) - len(outcomes)
                    log.warning("stopping with %d unstored sends; the broker will redeliver them", unsettled)
                    self._publish(batch, outcomes)  # what did get stored is still fanned out and acked
                    return
                delay = min(delay * 2, self._retry_max)
        if attempt:
            log.info("store append recovered after %d retries", attempt)
        self._publish(batch, outcomes)

    def _not_ours(self, batch: list[Inbound]) -> dict[int, _Outcome]:
        """Sends of partitions whose lease lapsed since they were admitted (Redis unreachable, or
        this process stalled): another worker may own them now, so write nothing and answer nothing;
        the device resends and the owner stores it once."""
        if self._may_write is None:
            return {}
        return {i: _Outcome(dropped=True) for i, item in enumerate(batch) if not self._may_write(item.message.conv)}

    def _over_rate(self, batch: list[Inbound], settled: dict[int, _Outcome]) -> dict[int, _Outcome]:
        """Sends above their sender's rate, refused before anything is stored (counted once per
        send: a broker redelivery was counted the first time)."""
        if self._rate is None:
            return {}
        fresh = [i for i, item in enumerate(batch) if not item.redelivered and i not in settled]
        allowed = self._rate.allow([batch[i].message.sender for i in fresh])
        why = (ErrorCode.RATE_LIMITED, "sending too fast; resend later with the same client_msg_id")
        return {i: _Outcome(rejection=why) for i, ok in zip(fresh, allowed, strict=True) if not ok}

    def _settle(self, batch: list[Inbound], outcomes: dict[int, _Outcome], *, retried: bool) -> None:
        """Decide every not-yet-settled item: rejected, or appended. Raises on store failure."""
        todo = [i for i in range(len(batch)) if i not in outcomes]
        refused = {i: self._refusal(batch[i].message) for i in todo}
        if any(refused.values()) and self._membership.refresh():  # a conversation created a moment ago?
            refused = {i: self._refusal(batch[i].message) for i in todo}
        for i, why in refused.items():
            if why is not None:
                outcomes[i] = _Outcome(rejection=why)
        todo = [i for i in todo if i not in outcomes]
        if not todo:
            return
        window = self._edit_window_ms
        try:
            results = self._store.append([batch[i].message for i in todo], edit_window_ms=window)
        except NotFound:  # a conversation vanished: one by one, so only its own sends are refused
            for i in todo:
                try:
                    (result,) = self._store.append([batch[i].message], edit_window_ms=window)
                except NotFound:
                    outcomes[i] = _Outcome(rejection=(ErrorCode.UNKNOWN_CONVERSATION, "no such conversation"))
                else:
                    self._settle_media(batch[i].message, result)
                    outcomes[i] = self._accepted(batch[i], result, retried)
            return
        for i, result in zip(todo, results, strict=True):  # before any outcome: a failure retries the
            self._settle_media(batch[i].message, result)  # batch (appends and media steps are idempotent)
        for i, result in zip(todo, results, strict=True):
            outcomes[i] = self._accepted(batch[i], result, retried)

    def _settle_media(self, message: NewMessage, result: AppendResult) -> None:
        """A stored message's attachments become downloadable by the conversation's members; a
        deletion's are erased (also on a duplicate of it: finishing what a crash interrupted)."""
        if self._media is None or result.message is None:
            return
        if not result.duplicate:
            for media_id in attached_media(message.attachments):
                self._media.link(media_id, message.conv)
        for media_id in result.erased_media:
            erase_media(self._media, message.conv, media_id, self._store.media_attached)

    @staticmethod
    def _accepted(item: Inbound, result: AppendResult, retried: bool) -> _Outcome:
        if result.refusal is not None:
            return _Outcome(rejection=(result.refusal.code, result.refusal.message))
        # After a failed attempt (or a broker redelivery) a "duplicate" may be our own earlier write
        # whose fan-out never happened: broadcast it again; devices drop repeats by (conv, seq).
        return _Outcome(result=result, broadcast_duplicate=retried or item.redelivered)

    def _refusal(self, message: NewMessage) -> tuple[ErrorCode, str] | None:
        if not self._membership.exists(message.conv):
            return ErrorCode.UNKNOWN_CONVERSATION, f"no conversation {message.conv!r}"
        if not self._membership.is_member(message.conv, message.sender):
            return ErrorCode.NOT_MEMBER, f"{message.sender!r} is not a member of {message.conv!r}"
        if self._media is not None and message.attachments:
            return attachment_refusal(self._media, message.sender, message.attachments)
        return None

    def _broadcast(self, stored: Message) -> None:
        """Full message (fan-out on write), or a QoS 0 notice above the member threshold (fan-out
        on read). Decided per message from the live member count, so the switch is immediate."""
        members = len(self._membership.members(stored.conv))
        payload = stored.to_payload()
        if fanout_mode(members, self._fanout_read_threshold) == FANOUT_READ:
            self._outbox.publish(msg_topic(stored.conv), message_notice_of(payload), qos=QOS_NOTICE)
        else:
            self._outbox.publish(msg_topic(stored.conv), payload, qos=QOS_MSG)

    def _publish(self, batch: list[Inbound], outcomes: dict[int, _Outcome]) -> None:
        """Fan out new messages in seq order, then send acks, then PUBACK the sends."""
        settled = sorted(outcomes)
        broadcast: set[tuple[str, int]] = set()
        for i in settled:
            out = outcomes[i]
            if out.result is None or (out.result.duplicate and not out.broadcast_duplicate):
                continue
            stored = out.result.message
            assert stored is not None
            if (stored.conv, stored.seq) not in broadcast:
                broadcast.add((stored.conv, stored.seq))
                self._broadcast(stored)
        for i in settled:
            item, out = batch[i], outcomes[i]
            msg = item.message
            if out.dropped:
                if item.reply is not None:
                    item.reply({"client_msg_id": msg.client_msg_id, "conv": msg.conv, "status": RETRY_STATUS})
                continue
            if out.result is not None and out.result.message is not None:
                stored = out.result.message
                ack = received_ack(msg.client_msg_id, msg.conv, stored.seq, stored.ts)
            else:
                assert out.rejection is not None
                ack = rejected_ack(msg.client_msg_id, msg.conv, *out.rejection)
            if item.reply is not None:
                item.reply(ack)
            else:
                self._outbox.publish(ack_topic(msg.sender), ack)
        for i in settled:
            self._outbox.ack(batch[i].mid, batch[i].qos)
