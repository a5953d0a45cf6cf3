"""Storage backends behind one interface; ``open_store(url)`` picks one by URL scheme."""

from __future__ import annotations

from chatcore.store.base import (
    AlreadyExists,
    AppendResult,
    Change,
    Conversation,
    ConversationEvent,
    HistoryPage,
    Marker,
    Message,
    MessageView,
    NewMessage,
    NewUser,
    NotFound,
    Reactions,
    ReceiptOutcome,
    ReceiptResult,
    ReceiptUpdate,
    Refusal,
    Store,
    StoreError,
    User,
    ViewPage,
)

__all__ = [
    "AlreadyExists",
    "AppendResult",
    "Change",
    "Conversation",
    "ConversationEvent",
    "HistoryPage",
    "Marker",
    "Message",
    "MessageView",
    "NewMessage",
    "NewUser",
    "NotFound",
    "Reactions",
    "ReceiptOutcome",
    "ReceiptResult",
    "ReceiptUpdate",
    "Refusal",
    "Store",
    "StoreError",
    "User",
    "ViewPage",
    "open_store",
]


def open_store(url: str) -> Store:
    """``sqlite:///abs/path.db`` (embedded default), ``mongodb://...`` or ``mongomock://name`` (tests)."""
    if url.startswith("sqlite:///"):
        from chatcore.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))  # sqlite:////abs/path or sqlite:///rel
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from chatcore.store.mongo import MongoStore

        return MongoStore.from_url(url)
    if url.startswith("mongomock://"):
        from chatcore.store.mongo import MongoStore

        return MongoStore.mongomock(url.removeprefix("mongomock://") or "chatmq")
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or mongodb://HOST/DB")
