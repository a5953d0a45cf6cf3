"""History pages and search results as devices get them: the same page over HTTP
(chatmq/api/conversations.py, chatmq/api/search.py) and over MQTT (chatmq/bridge/history.py), with the same access rule,
so the two paths cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from chatmq.core.ids import is_valid_id
from chatmq.core.search import SearchQuery, SearchQueryError, parse_query
from chatmq.core.store.base import Conversation, LogAccess, SearchPage, Store, search_result


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[dict[str, Any]]  # ascending seq, as payloads
    has_more: bool  # more exist in the direction of travel (older without ``after``, newer with it)
    last_seq: int  # the conversation's last seq, read before the page
    # Where the conversation's retained log starts (seqs below it were purged by retention), read
    # before the page: a purge running meanwhile may have moved it further.
    first_seq: int = 1

    def fit(self, budget: int, *, newest_first: bool) -> Page:
        """The page cut to ``budget`` bytes of encoded messages, keeping the ones nearest the cursor
        (the newest when walking back, the oldest when catching up) and always at least one, so a
        walk always moves on; a cut page has more."""
        sizes = [len(orjson.dumps(m)) + 1 for m in self.messages]  # + 1: the separating comma
        order = range(len(sizes) - 1, -1, -1) if newest_first else range(len(sizes))
        kept, used = 0, 0
        for index in order:
            if kept and used + sizes[index] > budget:
                break
            used += sizes[index]
            kept += 1
        if kept == len(self.messages):
            return self
        messages = self.messages[len(self.messages) - kept:] if newest_first else self.messages[:kept]
        return Page(messages, True, self.last_seq, self.first_seq)


def read_page(
    store: Store, conversation: Conversation | LogAccess, view: str, *,
    before: int | None = None, after: int | None = None, limit: int = 50,
) -> Page:  # fmt: skip
    """One page of ``view`` ("entries": the raw log; "messages": messages as they stand now).

    ``last_seq`` is the conversation's as read before the page, so a client that applies every
    entry after it to the page can only repeat changes the page already shows, which is harmless.
    """
    if view == "messages":
        views = store.message_view(conversation.id, before=before, after=after, limit=limit)
        return Page([v.to_payload() for v in views.messages], views.has_more, conversation.last_seq,
                    conversation.first_seq)
    page = store.history_payloads(conversation.id, before=before, after=after, limit=limit)
    return Page(page.payloads, page.has_more, conversation.last_seq, conversation.first_seq)


class SearchRefused(Exception):
    """A search the caller may not run as asked; ``code`` is the HTTP API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "bad_request" | "forbidden" | "not_found"
        self.message = message


def search_messages(
    store: Store, user: str, q: str, *, conv: str | None = None, sender: str | None = None,
    before: str | None = None, limit: int,
) -> SearchPage:  # fmt: skip
    """``user``'s search: refused for a query without words, a cursor the store did not make, a
    sender that is no user id, or a conversation that does not exist or is not the user's; the
    store reads the user's memberships again in the same query."""
    try:
        words = parse_query(q)
    except SearchQueryError as exc:
        raise SearchRefused("bad_request", str(exc)) from None
    if conv is not None:
        conversation = store.get_conversation(conv) if is_valid_id(conv) else None
        if conversation is None:
            raise SearchRefused("not_found", f"no conversation {conv!r}")
        if user not in conversation.members:
            raise SearchRefused("forbidden", "not a member of this conversation")
    if sender is not None and not is_valid_id(sender):
        raise SearchRefused("bad_request", f"sender: {sender!r} is not a user id")
    try:
        return store.search(user, SearchQuery(words, conv=conv, sender=sender, before=before, limit=limit))
    except SearchQueryError as exc:
        raise SearchRefused("bad_request", str(exc)) from None


def fit_search(page: SearchPage, budget: int) -> SearchPage:
    """The page cut to ``budget`` bytes of encoded results, keeping the newest and always one, so
    paging always moves on; a cut page has more (its cursor continues after the last one kept)."""
    used, kept = 0, 0
    for view in page.messages:
        size = len(orjson.dumps(search_result(view))) + 1
        if kept and used + size > budget:
            break
        used += size
        kept += 1
    if kept == len(page.messages):
        return page
    return SearchPage(page.messages[:kept], page.cursors[:kept], True)
