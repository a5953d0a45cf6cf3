"""From the store's outbox to durable deliveries: who is notified of what, and which webhooks fire.

The bridge writes an outbox entry with every stored message (and the store with every read
marker that moved and every conversation change), in the same transaction. This module reads
the entries in order, decides, and writes the decision together with consuming the entries
(``Store.apply_dispatch``: one transaction on SQLite; on MongoDB idempotent steps in order). A
crash part way only repeats the decision: delivery ids are derived from what they deliver, so a
second write of one is a no-op, and a notification that already covers a message is not touched.

Push, per stored message, for every member but the sender who has a push target, has not muted
the conversation and has no live device (presence): one notification per device. Collapsing: a
device gets at most one notification per conversation per ``collapse_s``; messages arriving
meanwhile replace the waiting notification's content (newest message, ``collapsed`` counts them),
so a burst of 50 messages is two buzzes, not 50. A read marker that moved cancels a waiting
notification it covers and sends a ``clear`` to the reader's devices that were shown one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chatmq.core import push, webhooks
from chatmq.core.presence import Presence
from chatmq.core.protocol import EntryKind
from chatmq.core.store.base import (
    DELIVERED,
    DELIVERY_PENDING,
    DELIVERY_PUSH,
    DELIVERY_WEBHOOK,
    OUTBOX_EVENT,
    OUTBOX_MESSAGE,
    OUTBOX_READ,
    Collapse,
    Conversation,
    Delivery,
    DispatchBatch,
    Message,
    OutboxEntry,
    PushTarget,
    Store,
    Webhook,
    now_ms,
)

log = logging.getLogger(__name__)

BATCH = 500


def push_key(target: PushTarget, conv: str) -> str:
    """One device's notifications of one conversation: collapsed and sent in order under this key."""
    return f"p:{target.key}:{conv}"


def webhook_key(webhook_id: str, conv: str) -> str:
    """One subscription's events of one conversation: delivered in order under this key."""
    return f"w:{webhook_id}:{conv}"


@dataclass
class _Notice:
    """The newest message for one (device, conversation) in this batch, and how many it stands for."""

    target: PushTarget
    message: Message
    count: int = 0


@dataclass
class _Decided:
    """What one pass writes, in one store call (``Store.apply_dispatch``)."""

    deliveries: list[Delivery] = field(default_factory=list)
    collapses: list[Collapse] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    redactions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Batch:
    """What one pass learned, so each conversation and member list is read once."""

    convs: dict[str, Conversation | None] = field(default_factory=dict)
    messages: dict[tuple[str, int], Message] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        presence: Presence,
        *,
        push_enabled: bool,
        preview: bool = True,
        collapse_s: float = 30.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._presence = presence
        self._push_enabled = push_enabled
        self._preview = preview
        self._collapse_ms = int(collapse_s * 1000)
        self._clock = clock

    def run_once(self, limit: int = BATCH) -> int:
        """Turn up to ``limit`` outbox entries into deliveries; returns how many were consumed."""
        entries = self._store.pending_outbox(limit)
        if not entries:
            return 0
        hooks = self._store.webhooks()
        batch = _Batch()
        self._load_messages(entries, batch, need_bodies=bool(hooks) or self._push_enabled)  # kinds, bodies
        decided = _Decided(deliveries=self._webhook_deliveries(entries, hooks, batch))
        if self._push_enabled:
            notified = self._push_deliveries([e for e in entries if e.kind == OUTBOX_MESSAGE], batch, decided)
            self._clears([e for e in entries if e.kind == OUTBOX_READ], notified, decided)
        self._redact(entries, batch, decided)
        self._store.apply_dispatch(DispatchBatch(decided.deliveries, decided.collapses, decided.cancels,
                                                 [e.id for e in entries], decided.redactions))  # fmt: skip
        return len(entries)

    # --- reading what the entries refer to ------------------------------------------------------
    def _conversation(self, conv: str, batch: _Batch) -> Conversation | None:
        if conv not in batch.convs:
            batch.convs[conv] = self._store.get_conversation(conv)
        return batch.convs[conv]

    def _load_messages(self, entries: Sequence[OutboxEntry], batch: _Batch, *, need_bodies: bool) -> None:
        """The stored messages of the batch, one history read per conversation."""
        if not need_bodies:
            return
        seqs: defaultdict[str, list[int]] = defaultdict(list)
        for entry in entries:
            if entry.kind == OUTBOX_MESSAGE:
                seqs[entry.conv].append(entry.seq)
        for conv, wanted in seqs.items():
            low, high = min(wanted), max(wanted)
            page = self._store.history(conv, after=low - 1, before=high + 1, limit=high - low + 1)
            for message in page.messages:
                batch.messages[(conv, message.seq)] = message

    def _message(self, entry: OutboxEntry, batch: _Batch) -> Message:
        """The stored message, or what the entry itself knows of it (bodies not loaded)."""
        found = batch.messages.get((entry.conv, entry.seq))
        if found is not None:
            return found
        return Message(conv=entry.conv, seq=entry.seq, id="", sender=entry.user or "", client_msg_id="", body="",
                       ts=entry.ts)  # fmt: skip

    # --- webhooks -----------------------------------------------------------------------------
    def _webhook_deliveries(
        self, entries: Sequence[OutboxEntry], hooks: list[Webhook], batch: _Batch
    ) -> list[Delivery]:
        if not hooks:
            return []
        out: list[Delivery] = []
        now = self._clock()
        for entry in entries:
            if entry.kind == OUTBOX_MESSAGE:
                body = webhooks.message_event(self._message(entry, batch))
                if body is None:
                    continue  # a reaction
            elif entry.kind == OUTBOX_EVENT and entry.event is not None:
                conversation = self._conversation(entry.conv, batch)
                body = webhooks.conversation_event(entry.event, conversation.members if conversation else None)
            else:
                continue
            for hook in hooks:
                if body["type"] in hook.events:
                    out.append(Delivery(id=f"w:{hook.id}:{body['id']}", channel=DELIVERY_WEBHOOK, target=hook.id,
                                        order_key=webhook_key(hook.id, entry.conv), payload=body, next_at=now))
        return out

    # --- push ---------------------------------------------------------------------------------
    def _push_deliveries(self, entries: Sequence[OutboxEntry], batch: _Batch, decided: _Decided) -> set[str]:
        """Notifications for the batch's messages; returns the order keys notified."""
        notices: dict[tuple[str, str], _Notice] = {}  # (device key, conv) -> newest message
        by_conv: defaultdict[str, list[OutboxEntry]] = defaultdict(list)
        for entry in entries:
            by_conv[entry.conv].append(entry)
        now = self._clock()
        for conv, conv_entries in by_conv.items():
            conversation = self._conversation(conv, batch)
            if conversation is None:
                continue
            targets = self._store.push_targets(conversation.members)
            if not targets:
                continue
            users = {t.user for t in targets}
            quiet = self._store.muted_members(conv, sorted(users), now)
            awake = self._presence.online(users - quiet, now)
            eligible = [t for t in targets if t.user not in quiet and t.user not in awake]
            for entry in sorted(conv_entries, key=lambda e: e.seq):
                message = self._message(entry, batch)
                if message.kind != EntryKind.MESSAGE:
                    continue  # edits, deletions and reactions change what was notified: no buzz
                for target in eligible:
                    if target.user == entry.user:
                        continue  # your own messages never notify you
                    notice = notices.setdefault((target.key, conv), _Notice(target, message))
                    notice.message, notice.count = message, notice.count + 1
        latest = self._store.latest_deliveries([push_key(n.target, n.message.conv) for n in notices.values()])
        for notice in notices.values():
            self._notify(notice, latest.get(push_key(notice.target, notice.message.conv)), batch, now, decided)
        return {push_key(n.target, n.message.conv) for n in notices.values()}

    def _notify(self, notice: _Notice, latest: Delivery | None, batch: _Batch, now: int, decided: _Decided) -> None:
        """A new notification, or the newer message collapsed into the one still waiting."""
        target, message = notice.target, notice.message
        key = push_key(target, message.conv)
        if latest is not None and latest.payload.get("seq", 0) >= message.seq:
            return  # this message is covered already (a repeated pass after a crash)
        conversation = batch.convs.get(message.conv)
        title = conversation.title if conversation else None
        preview = message.body if self._preview and target.preview and message.body else None

        def draft(collapsed: int) -> dict[str, Any]:
            return push.message_draft(target, message.conv, title, message.seq, message.sender, message.id,
                                      message.ts, preview, collapsed)  # fmt: skip

        fresh = Delivery(id=f"{key}:{message.seq}", channel=DELIVERY_PUSH, target=target.key, order_key=key,
                         payload=draft(notice.count), next_at=now)  # fmt: skip
        if latest is None or latest.payload.get("type") != push.NOTIFY_MESSAGE:
            decided.deliveries.append(fresh)
        elif latest.state == DELIVERY_PENDING:
            # Waiting still: it shows the newest message instead. If it goes out before this is
            # written, the new one waits one collapse window after it.
            later = replace(fresh, next_at=now + self._collapse_ms)
            payload = draft(notice.count + int(latest.payload.get("collapsed", 1)))
            decided.collapses.append(Collapse(latest.id, payload, later))
        elif latest.state == DELIVERED:
            decided.deliveries.append(replace(fresh, next_at=max(now, latest.updated_at + self._collapse_ms)))
        else:
            decided.deliveries.append(fresh)  # the last one was cancelled or dead: this is news again

    def _clears(self, entries: Sequence[OutboxEntry], notified: set[str], decided: _Decided) -> None:
        """A read marker moved: cancel what waits for messages now read, clear what was shown."""
        now = self._clock()
        newest: dict[tuple[str, str], OutboxEntry] = {}
        for entry in entries:
            newest[(entry.conv, entry.user or "")] = entry
        readers = sorted({user for _, user in newest})
        targets: defaultdict[str, list[PushTarget]] = defaultdict(list)
        for target in self._store.push_targets(readers) if readers else []:
            targets[target.user].append(target)
        keys = {push_key(t, conv): (t, entry) for (conv, user), entry in newest.items() for t in targets[user]}
        latest = self._store.latest_deliveries(sorted(keys))
        for key, (target, entry) in keys.items():
            shown = latest.get(key)
            if key in notified or shown is None or shown.payload.get("type") != push.NOTIFY_MESSAGE:
                continue  # just notified of something newer, nothing shown, or cleared already
            if shown.payload.get("seq", 0) > entry.seq:
                continue  # something newer than what was read is still to be seen
            if shown.state == DELIVERY_PENDING:
                decided.cancels.append(shown.id)
            elif shown.state != DELIVERED:
                continue
            decided.deliveries.append(Delivery(
                id=f"{key}:{entry.seq}:clear", channel=DELIVERY_PUSH, target=target.key, order_key=key,
                payload=push.clear_draft(target, entry.conv, entry.seq, entry.ts), next_at=now))  # fmt: skip

    def _redact(self, entries: Sequence[OutboxEntry], batch: _Batch, decided: _Decided) -> None:
        """A message was deleted: its text goes from the delivery log too (webhook bodies of it and
        of its edits, notification previews), as the store erases it from the log. Deliveries
        written in this very pass carry the text the store already erased (read after the delete)."""
        deletes = [m for e in entries if e.kind == OUTBOX_MESSAGE
                   and (m := self._message(e, batch)).kind == EntryKind.DELETE and m.target is not None]  # fmt: skip
        for conv in {m.conv for m in deletes}:
            logged = self._store.conversation_deliveries(conv)
            for deleted in (m for m in deletes if m.conv == conv):
                for delivery in logged:
                    erase = webhooks.erased if delivery.channel == DELIVERY_WEBHOOK else push.erased
                    clean = erase(delivery.payload, conv, int(deleted.target or 0))
                    if clean is not None:
                        decided.redactions.append((delivery.id, clean))
