"""Small builders shared by the store tests."""

from __future__ import annotations

from typing import Any

from chatmq.core.store.base import NewMessage, Store

TS = 1_700_000_000_000


def msg(conv: str, sender: str, client_msg_id: str, body: str = "hi", **extra: Any) -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_msg_id=client_msg_id, body=body, ts=TS, **extra)


def seed(store: Store, convs: tuple[str, ...] = ("general",)) -> None:
    """Users alice, bob and carol; each conversation has alice and bob."""
    for user in ("alice", "bob", "carol"):
        store.create_user(user, f"hash-{user}")
    for conv in convs:
        store.create_conversation(conv, ["alice", "bob"])


def fill(store: Store, conv: str, count: int, sender: str = "alice") -> None:
    store.append([msg(conv, sender, f"{conv}-{i}", body=f"m{i}") for i in range(count)])


MEDIA_A = "a" * 32
MEDIA_B = "b" * 32


def populate(store: Store) -> None:
    """A store with one of everything a full export carries: users with profiles (one disabled, one
    without a password), conversations with owners, titles and retention (one purged from its start),
    a member removed, messages with
    attachments, replies, edits, deletions (one erasing media), reactions taken back, receipts,
    push targets, mutes and a webhook."""
    from chatmq.core.protocol import EntryKind
    from chatmq.core.store.base import PushTarget, ReceiptUpdate, Webhook

    store.create_user("alice", "hash-alice", display_name="Alice", avatar=MEDIA_B)
    store.create_user("bob", "hash-bob")
    store.create_user("carol", "")
    store.create_user("dave", "hash-dave")
    store.set_disabled("dave", True)
    store.create_conversation("general", ["alice", "bob", "carol", "dave"], title="General", owner="alice")
    store.create_conversation("dm-alice-bob", ["alice", "bob"])
    store.remove_member("general", "dave")

    def change(kind: str, sender: str, cmid: str, target: int, body: str = "", emoji: str | None = None) -> NewMessage:
        return NewMessage("general", sender, cmid, body, TS + 5, kind=kind, target=target, emoji=emoji)

    store.append([
        msg("general", "alice", "g1", "hello", attachments=({"media_id": MEDIA_A, "mime": "image/png"},)),
        msg("general", "bob", "g2", "hi alice", reply_to=1),
        msg("general", "carol", "g3", "with a file", attachments=({"media_id": MEDIA_B, "mime": "text/plain"},)),
        msg("dm-alice-bob", "alice", "d1", "psst"),
    ])
    store.append([
        change(EntryKind.EDIT, "bob", "g4", 2, "hi Alice"),
        change(EntryKind.REACT, "alice", "g5", 2, "👍", "👍"),
        change(EntryKind.REACT, "carol", "g6", 2, "🎉", "🎉"),
        change(EntryKind.REACT, "bob", "g7", 1, "👍", "👍"),
        change(EntryKind.UNREACT, "carol", "g8", 2, "", "🎉"),
        change(EntryKind.EDIT, "carol", "g9", 3, "with a file (edited)"),
        change(EntryKind.DELETE, "carol", "g10", 3),
    ])
    store.append([msg("general", "alice", "g11", "after the deletion")])
    store.apply_receipts([
        ReceiptUpdate("general", "bob", 9, "read", TS + 10),
        ReceiptUpdate("general", "alice", 4, "delivered", TS + 11),
        ReceiptUpdate("dm-alice-bob", "bob", 1, "read", TS + 12),
    ])
    store.create_conversation("archive", ["alice", "bob"])  # retention purged its first three
    store.append([NewMessage("archive", "alice", f"a{i}", f"old {i}", TS - 100 + i) for i in range(3)])
    store.append([NewMessage("archive", "bob", "a3", "kept", TS + 100)])
    store.set_retention("archive", 30)
    store.set_retention("general", 0)
    assert store.purge_expired("archive", TS, 10).first_seq == 4
    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok-bob", app_id="app", preview=False))
    store.put_push_target(PushTarget("alice", "ipad", "apns", "tok-alice"))
    store.set_mute("general", "bob", 0)
    store.set_mute("dm-alice-bob", "alice", TS + 3_600_000)
    store.add_webhook(Webhook("hook1", "https://example.com/hook", "s3cret", ("message.created",), created_at=TS))


def snapshot(store: Store) -> dict[str, Any]:
    """Everything the store holds that an export carries, read through the Store interface (the
    derived state too: messages as they stand, which media each conversation still attaches)."""
    users = store.list_users()
    convs = store.list_conversations()
    out: dict[str, Any] = {"users": users, "conversations": convs, "webhooks": store.webhooks(),
                           "push_targets": store.push_targets([u.id for u in users]),
                           "mutes": store.mutes([c.id for c in convs])}
    for conv in convs:
        entries = []
        while page := store.log_entries(conv.id, after=entries[-1].message.seq if entries else 0, limit=3):
            entries += page
        views = []
        while True:
            view = store.message_view(conv.id, after=views[-1].message.seq if views else 0, limit=3)
            views += view.messages
            if not view.has_more:
                break
        media = {a["media_id"] for e in entries for a in e.message.attachments} | \
            {m for e in entries for m in e.erased_media}  # fmt: skip
        out[f"conv {conv.id}"] = {
            "entries": entries, "views": views, "markers": store.markers(conv.id),
            "attached": {m: store.media_attached(conv.id, m) for m in sorted(media)},
        }
    from chatmq.core.search import SearchQuery

    out["search"] = {(user.id, word): [(v.message.conv, v.message.seq) for v in
                                       store.search(user.id, SearchQuery((word,), limit=50)).messages]
                     for user in users for word in ("hello", "hi", "alice", "file", "edited", "psst", "deletion")}
    return out
