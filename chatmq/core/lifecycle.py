"""The data lifecycle: how long a conversation's log is kept, and what an operator's erasure
removes. Written once for the retention job (``chatmq retention``), the admin commands and the
admin API; docs/data-lifecycle.md is the operator's account of it.

The store erases the log in place (``Store.purge_expired``, ``erase_messages``,
``delete_conversation``); this module finishes what lies outside the log, in the same order each
time: the media the erased messages attached (``chatmq.core.media.erase_media``: an upload another
message still attaches stays), then the delivery log's copies of their text (webhook bodies and
notification previews, redacted with the notifier's own ``webhooks.erased`` / ``push.erased``).
Last, the search index is compacted (``Store.compact_search_index``), so the words of what was
removed leave the index's files too, and the index does not carry dead words from pass to pass;
every retention pass compacts as well (for users' own deletions and edits since the last one).
Every step is idempotent, so an erasure interrupted part way is finished by running it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from chatmq.core import push, webhooks
from chatmq.core.media.base import MediaStore, erase_media
from chatmq.core.presence import Presence
from chatmq.core.store.base import (
    DELIVERY_WEBHOOK,
    ERASED_BY_ADMIN,
    Conversation,
    DispatchBatch,
    Erased,
    Store,
    now_ms,
)

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
PURGE_BATCH = 500  # entries per purge write: one short write lock, then sends go first
PURGE_PAUSE_S = 0.02  # between two batches of one purge: the writers' turn
ERASE_BATCH = 200  # messages per erasure write
MAX_RETENTION_DAYS = 36_500


def retention_days_of(conv: Conversation, default_days: int) -> int:
    """The policy that applies: the conversation's own, else the deployment's (0: keep forever)."""
    return default_days if conv.retention_days is None else conv.retention_days


@dataclass
class PurgeReport:
    conversations: int = 0  # looked at
    purged: int = 0  # entries removed
    media: int = 0  # uploads the purged messages attached (erased unless attached elsewhere)
    by_conversation: dict[str, int] = field(default_factory=dict)
    compaction_steps: int = 0  # of the search index after the pass (0: nothing had left it)

    def to_payload(self) -> dict[str, Any]:
        return {"conversations": self.conversations, "purged": self.purged, "media": self.media,
                "by_conversation": self.by_conversation, "compaction_steps": self.compaction_steps}  # fmt: skip


@dataclass
class Lifecycle:
    store: Store
    media: MediaStore | None = None  # None: no media store here (its uploads stay until a run that has one)
    presence: Presence | None = None  # None: no Redis here (presence expires on its own)
    pause_s: float = PURGE_PAUSE_S
    sleep: Callable[[float], None] = time.sleep

    # --- retention -----------------------------------------------------------------------------
    def purge_conversation(self, conv_id: str, before_ts: int, *, batch: int = PURGE_BATCH) -> int:
        """Remove the conversation's entries older than ``before_ts``, one bounded write at a time
        with a pause between (the bridge's appends take the write lock in between). Returns how
        many went."""
        removed = 0
        while True:
            erased = self.store.purge_expired(conv_id, before_ts, batch)
            self._finish(conv_id, erased)
            removed += len(erased.seqs)
            if not erased.more:
                return removed
            self.sleep(self.pause_s)

    def purge_expired(self, default_days: int, *, now: int | None = None, batch: int = PURGE_BATCH,
                      progress: Callable[[str, int], None] | None = None) -> PurgeReport:
        """One retention pass over every conversation."""
        now = now_ms() if now is None else now
        report = PurgeReport()
        for conv in self._conversations():
            report.conversations += 1
            days = retention_days_of(conv, default_days)
            if days <= 0 or conv.last_seq < conv.first_seq:
                continue
            removed = self.purge_conversation(conv.id, now - days * DAY_MS, batch=batch)
            if removed:
                report.purged += removed
                report.by_conversation[conv.id] = removed
                log.info("retention: %s purged %d entries older than %d days", conv.id, removed, days)
            if progress is not None:
                progress(conv.id, removed)
        report.compaction_steps = self.store.compact_search_index()
        return report

    # --- an operator's erasure -------------------------------------------------------------------
    def redact(self, conv_id: str, seqs: Collection[int], *, by: str = ERASED_BY_ADMIN) -> Erased:
        """Erase messages as an operator: tombstones like a deletion, their media and delivery log
        copies gone, their words out of the search index's files."""
        erased = self._redact(conv_id, seqs, by)
        self.store.compact_search_index()
        return erased

    def _redact(self, conv_id: str, seqs: Collection[int], by: str = ERASED_BY_ADMIN) -> Erased:
        erased = self.store.erase_messages(conv_id, sorted(seqs), by, now_ms())
        self._finish(conv_id, erased)
        return erased

    def erase(self, user_id: str) -> None:
        """chatmq.core.admin.UserEraser: everything a deleted user leaves (docs/data-lifecycle.md)."""
        self.erase_user(user_id)

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """The user's messages become tombstones (with their edits, media and delivery log copies),
        their reactions go, then the account part (``Store.forget_user``) and their presence."""
        messages = reactions = 0
        for conv in self._conversations():
            after = 0
            while seqs := self.store.messages_of(conv.id, user_id, after=after, limit=ERASE_BATCH):
                messages += len(self._redact(conv.id, seqs).seqs)
                after = seqs[-1]
            reactions += self.store.erase_reactions(conv.id, user_id)
        user = self.store.get_user(user_id)
        if user is not None and user.avatar and self.media is not None:
            self.media.delete(user.avatar)
        left = self.store.forget_user(user_id)
        if self.presence is not None:
            self.presence.forget(user_id)
        self.store.compact_search_index()
        log.info("erased user %s: %d messages, %d reactions, left %d conversations",
                 user_id, messages, reactions, len(left))  # fmt: skip
        return {"id": user_id, "messages_erased": messages, "reactions_erased": reactions,
                "conversations_left": left}  # fmt: skip

    def delete_conversation(self, conv_id: str) -> dict[str, Any]:
        erased = self.store.delete_conversation(conv_id)
        self._erase_media(conv_id, erased.media)
        self.store.compact_search_index()
        return {"id": conv_id, "deleted": True, "media": len(erased.media)}

    # --- what lies outside the log ---------------------------------------------------------------
    def _finish(self, conv_id: str, erased: Erased) -> None:
        self._erase_media(conv_id, erased.media)
        if erased.seqs:
            self._redact_deliveries(conv_id, set(erased.seqs))

    def _erase_media(self, conv_id: str, media_ids: Collection[str]) -> None:
        if self.media is None:
            if media_ids:
                log.warning("%s: %d uploads to erase but no media store here", conv_id, len(media_ids))
            return
        for media_id in media_ids:
            erase_media(self.media, conv_id, media_id, self.store.media_attached)

    def _redact_deliveries(self, conv_id: str, seqs: set[int]) -> None:
        """The delivery log's copies of the erased messages' text (webhook bodies of them and of
        their edits, notification previews) lose it, as the notifier does for a deletion."""
        redactions: list[tuple[str, dict[str, Any]]] = []
        for delivery in self.store.conversation_deliveries(conv_id):
            erase = webhooks.erased if delivery.channel == DELIVERY_WEBHOOK else push.erased
            payload, changed = delivery.payload, False
            for seq in _seqs_named(payload) & seqs:
                clean = erase(payload, conv_id, seq)
                if clean is not None:
                    payload, changed = clean, True
            if changed:
                redactions.append((delivery.id, payload))
        if redactions:
            self.store.apply_dispatch(DispatchBatch(redactions=redactions))

    def _conversations(self, page: int = 500) -> Iterator[Conversation]:
        after: str | None = None
        while convs := self.store.list_conversations(after=after, limit=page):
            yield from convs
            after = convs[-1].id


def _seqs_named(payload: dict[str, Any]) -> set[int]:
    """The seqs a logged delivery is about: a notification's, a webhook's message and edit target."""
    data = payload.get("data") or {}
    named = {payload.get("seq"), data.get("seq"), data.get("target")}
    return {s for s in named if isinstance(s, int)}
