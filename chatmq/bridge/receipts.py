"""Receipts: move members' delivered/read markers forward and tell the conversation.

Like sends, receipts are written on their own thread (never on the MQTT client's thread), in batches
of whatever queued up, and PUBACKed only after the store returned: a marker the server announced
on ``chat/{conv}/receipts`` is durable. A refused receipt (bad payload, not a member, a seq the
conversation does not have yet) stores nothing and is answered on the sender's
``user/{user}/events``: receipts carry no id to hang an ack on, and the events topic is the
server's general channel to one user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from chatmq.bridge.outbox import Outbox
from chatmq.bridge.worker import BatchWorker
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import Fence
from chatmq.core.protocol import (
    QOS_RECEIPTS,
    ErrorCode,
    events_topic,
    receipt,
    receipt_rejected,
    receipts_topic,
)
from chatmq.core.store.base import ReceiptOutcome, ReceiptResult, ReceiptUpdate, Store, now_ms

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InboundReceipt:
    update: ReceiptUpdate
    mid: int
    qos: int


class ReceiptWorker(BatchWorker[InboundReceipt]):
    def __init__(
        self, store: Store, membership: MembershipView, outbox: Outbox, *, retry_max_s: float = 5.0,
        fence: Fence | None = None,
    ) -> None:
        super().__init__("bridge-receipts")
        self._fence = fence  # the broker's membership view catches up before our publishes
        self._store = store
        self._membership = membership
        self._outbox = outbox
        self._retry_max = retry_max_s

    def _handle(self, batch: list[InboundReceipt]) -> None:
        refusals = [self._refusal(item.update) for item in batch]
        if any(refusals) and self._membership.refresh():  # added a moment ago?
            refusals = [self._refusal(item.update) for item in batch]
        accepted = [item.update for item, why in zip(batch, refusals, strict=True) if why is None]
        results = iter(self._retrying(lambda: self._store.apply_receipts(accepted), "storing receipts")
                       if accepted else [])  # fmt: skip
        if accepted and self._fence is not None:
            self._retrying(self._fence.after_write, "reading the membership version")
        for item, why in zip(batch, refusals, strict=True):
            if why is None:
                why = self._publish(item.update, next(results))
            if why is not None:
                self._reject(item.update, *why)
        for item in batch:
            self._outbox.ack(item.mid, item.qos)

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        delay = 0.05
        while True:
            try:
                return call()
            except Exception as exc:
                log.warning("%s failed (%s); retrying", what, exc)
                if self._stopping.wait(delay):
                    raise  # unPUBACKed: the broker redelivers them to the next session
                delay = min(delay * 2, self._retry_max)

    def _publish(self, update: ReceiptUpdate, result: ReceiptResult) -> tuple[ErrorCode, str] | None:
        if result.outcome is ReceiptOutcome.MOVED:
            payload = receipt(update.user, update.seq, update.status, update.ts)
            self._outbox.publish(receipts_topic(update.conv), payload, qos=QOS_RECEIPTS)
        elif result.outcome is ReceiptOutcome.SEQ_AHEAD:
            return ErrorCode.SEQ_AHEAD, f"seq {update.seq} is above the conversation's last seq {result.last_seq}"
        elif result.outcome is ReceiptOutcome.UNKNOWN_CONVERSATION:
            return ErrorCode.UNKNOWN_CONVERSATION, f"no conversation {update.conv!r}"
        return None  # unchanged: an old or repeated receipt, silently ignored

    def _refusal(self, update: ReceiptUpdate) -> tuple[ErrorCode, str] | None:
        if not self._membership.exists(update.conv):
            return ErrorCode.UNKNOWN_CONVERSATION, f"no conversation {update.conv!r}"
        if not self._membership.is_member(update.conv, update.user):
            return ErrorCode.NOT_MEMBER, f"{update.user!r} is not a member of {update.conv!r}"
        return None

    def _reject(self, update: ReceiptUpdate, code: ErrorCode, message: str) -> None:
        payload = receipt_rejected(update.conv, code, message, now_ms(), seq=update.seq, status=update.status)
        self._outbox.publish(events_topic(update.user), payload)
