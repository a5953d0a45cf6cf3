"""History pages over MQTT, for devices without an HTTP client.

A device publishes a request on ``user/{me}/history/request`` (only it may): a history page, or a
search (a request with ``q``, the page of ``GET /v1/search``); the answer goes to
``user/{me}/history/response`` (only it may read). The page is the HTTP API's (chatmq.core.history),
with the same cursors, limits and access rule: the conversation and its members are read from the
store for every request, so a removed member is refused at once, as over HTTP. Requests are read
on their own thread, never on the MQTT client's thread nor the writer's, so a slow read never
delays a send; each answer is cut to the device's ``max_bytes``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from chatmq.bridge.outbox import Outbox
from chatmq.bridge.worker import BatchWorker
from chatmq.core.history import SearchRefused, fit_search, read_page, search_messages
from chatmq.core.ids import is_valid_id
from chatmq.core.protocol import (
    QOS_HISTORY,
    HistoryErrorCode,
    HistoryRequestError,
    SearchRequest,
    history_page,
    history_refused,
    history_response_topic,
    parse_history_request,
    search_results,
)
from chatmq.core.ratelimit import MessageRate
from chatmq.core.search import MAX_CURSOR_CHARS
from chatmq.core.store.base import Store, search_result

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    user: str
    payload: bytes
    mid: int
    qos: int


class HistoryWorker(BatchWorker[InboundRequest]):
    def __init__(self, store: Store, outbox: Outbox, *, rate: MessageRate | None = None) -> None:
        super().__init__("bridge-history")
        self._store = store
        self._outbox = outbox
        self._rate = rate  # per-user request rate (None: unlimited)

    def _handle(self, batch: list[InboundRequest]) -> None:
        allowed = self._rate.allow([item.user for item in batch]) if self._rate else [True] * len(batch)
        for item, ok in zip(batch, allowed, strict=True):
            reply = self._answer(item, ok)
            self._outbox.publish(history_response_topic(item.user), reply, qos=QOS_HISTORY)
            self._outbox.ack(item.mid, item.qos)

    def _answer(self, item: InboundRequest, allowed: bool) -> dict[str, object]:
        try:
            request = parse_history_request(item.payload)
        except HistoryRequestError as refusal:
            return history_refused(refusal)
        if isinstance(request, SearchRequest):
            return self._search(item.user, request, allowed)
        try:
            if not allowed:
                raise HistoryRequestError(HistoryErrorCode.RATE_LIMITED, "too many history requests; try later",
                                          request.id, request.conv)
            conversation = self._store.get_conversation(request.conv)
            if conversation is None:
                raise HistoryRequestError(HistoryErrorCode.NOT_FOUND, f"no conversation {request.conv!r}",
                                          request.id, request.conv)
            if item.user not in conversation.members:
                raise HistoryRequestError(HistoryErrorCode.FORBIDDEN, "not a member of this conversation",
                                          request.id, request.conv)
            page = read_page(self._store, conversation, request.view, before=request.before, after=request.after,
                             limit=request.limit)
        except HistoryRequestError as refusal:
            return history_refused(refusal)
        except Exception as exc:  # the store failed: say so; the device asks again
            log.warning("history request of %s failed: %s", item.user, exc)
            return history_refused(HistoryRequestError(HistoryErrorCode.INTERNAL, "could not read the history now",
                                                       request.id, request.conv))
        envelope = len(orjson.dumps(history_page(request.id, request.conv, [], False, page.last_seq, page.first_seq)))
        page = page.fit(request.max_bytes - envelope, newest_first=request.after is None)
        return history_page(request.id, request.conv, page.messages, page.has_more, page.last_seq, page.first_seq)

    def _search(self, user: str, request: SearchRequest, allowed: bool) -> dict[str, object]:
        """A search request: ``GET /v1/search``'s page and refusals (chatmq.core.history), counted
        against the same request rate, cut to the device's ``max_bytes``."""
        try:
            if not allowed:
                raise SearchRefused(HistoryErrorCode.RATE_LIMITED, "too many history requests; try later")
            page = search_messages(self._store, user, request.q, conv=request.conv, sender=request.sender,
                                   before=request.before, limit=request.limit)
        except SearchRefused as refusal:
            return history_refused(HistoryRequestError(HistoryErrorCode(refusal.code), refusal.message, request.id,
                                                       request.conv if is_valid_id(request.conv or "") else None))
        except Exception as exc:  # the store failed: say so; the device asks again
            log.warning("search request of %s failed: %s", user, exc)
            return history_refused(HistoryRequestError(HistoryErrorCode.INTERNAL, "could not search now", request.id))
        envelope = len(orjson.dumps(search_results(request.id, [], "x" * MAX_CURSOR_CHARS)))
        page = fit_search(page, request.max_bytes - envelope)
        return search_results(request.id, [search_result(v) for v in page.messages], page.next)
