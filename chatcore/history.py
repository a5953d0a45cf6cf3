"""History pages as devices get them: the same page over HTTP (api/conversations.py) and over MQTT
(bridge/history.py), in either view of the log, so the two paths cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from chatcore.store.base import Conversation, Store


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[dict[str, Any]]  # ascending seq, as payloads
    has_more: bool  # more exist in the direction of travel (older without ``after``, newer with it)
    last_seq: int  # the conversation's last seq, read before the page

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
        return Page(messages, True, self.last_seq)


def read_page(
    store: Store, conversation: Conversation, view: str, *,
    before: int | None = None, after: int | None = None, limit: int = 50,
) -> Page:  # fmt: skip
    """One page of ``view`` ("entries": the raw log; "messages": messages as they stand now).

    ``last_seq`` is the conversation's as read before the page, so a client that applies every
    entry after it to the page can only repeat changes the page already shows, which is harmless.
    """
    if view == "messages":
        views = store.message_view(conversation.id, before=before, after=after, limit=limit)
        return Page([v.to_payload() for v in views.messages], views.has_more, conversation.last_seq)
    page = store.history(conversation.id, before=before, after=after, limit=limit)
    return Page([m.to_payload() for m in page.messages], page.has_more, conversation.last_seq)
