"""Small builders shared by the store tests."""

from __future__ import annotations

from typing import Any

from chatcore.store.base import NewMessage, Store

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
