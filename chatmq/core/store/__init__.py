"""Storage backends behind one interface; ``open_store(url)`` picks one by URL scheme."""

from __future__ import annotations

from chatmq.core.store.base import (
    AlreadyExists,
    AppendResult,
    Change,
    Conversation,
    ConversationEvent,
    HistoryPage,
    LogAccess,
    LogEntry,
    Marker,
    Message,
    MessageView,
    Mute,
    NewMessage,
    NewUser,
    NotFound,
    PayloadPage,
    Reactions,
    ReceiptOutcome,
    ReceiptResult,
    ReceiptUpdate,
    Refusal,
    RestoreConflict,
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
    "LogAccess",
    "LogEntry",
    "Marker",
    "Message",
    "MessageView",
    "Mute",
    "NewMessage",
    "NewUser",
    "NotFound",
    "PayloadPage",
    "Reactions",
    "ReceiptOutcome",
    "ReceiptResult",
    "ReceiptUpdate",
    "Refusal",
    "RestoreConflict",
    "Store",
    "StoreError",
    "User",
    "ViewPage",
    "open_store",
]


def open_store(url: str, *, sync_every_commit: bool = True) -> Store:
    """``sqlite:///abs/path.db`` (embedded default), ``mongodb://...`` or ``mongomock://name`` (tests).

    ``sync_every_commit=False``: SQLite only, see ``SQLiteStore`` (MongoDB keeps its write concern)."""
    if url.startswith("sqlite:///"):
        from chatmq.core.store.sqlite import SQLiteStore

        # sqlite:////abs/path or sqlite:///rel
        return SQLiteStore(url.removeprefix("sqlite:///"), sync_every_commit=sync_every_commit)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from chatmq.core.store.mongo import MongoStore

        return MongoStore.from_url(url)
    if url.startswith("mongomock://"):
        from chatmq.core.store.mongo import MongoStore

        return MongoStore.mongomock(url.removeprefix("mongomock://") or "chatmq")
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///PATH or mongodb://HOST/DB")
