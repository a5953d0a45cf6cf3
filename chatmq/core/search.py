"""Full-text search, the part every store and every caller shares (sans-IO: no store, no network).

Words are what ``terms`` finds in a text: runs of letters and digits (Unicode), case-folded, with
accents removed ("Café" and "cafe" are one word), each cut to ``MAX_TERM_CHARS``. A message is
indexed by the set of its words as it stands now (after edits; a deleted message is not indexed),
and a query finds the messages that contain every word of it, in any order. Both stores index the
same words by this one function, so they find the same messages: SQLite FTS5 indexes the words
joined by spaces (its own tokenizer then only splits on those spaces) and MongoDB keeps them as an
array under a multikey index.

User input never reaches a query language: ``parse_query`` reduces it to words, and the SQLite
store quotes each word as an FTS5 string, so ``"``, ``*``, ``NEAR``, ``OR``, ``-`` or ``:`` typed by
a user are ordinary characters (separators), never operators.

Writing systems without spaces (Chinese, Japanese, Thai) index a run of characters as one word,
so a query finds such a message only by the whole run; a segmenting tokenizer is future work.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MAX_QUERY_CHARS = 256
MAX_QUERY_TERMS = 16
MAX_TERM_CHARS = 64
DEFAULT_SEARCH_LIMIT = 20
MAX_SEARCH_LIMIT = 100
MAX_CURSOR_CHARS = 512

_WORD = re.compile(r"[^\W_]+")


class SearchQueryError(ValueError):
    """A query or cursor the search refuses, with a message for the user."""


@functools.cache
def _marks() -> dict[int, None]:
    """Every combining mark (accents and the like), for str.translate to delete after NFKD
    decomposition (built on first use: ~80 ms, which no process should pay at import)."""
    return dict.fromkeys(c for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c)))


def terms(text: str) -> list[str]:
    """The words of ``text`` in order of first occurrence, each once."""
    # ASCII has nothing to decompose: the common case, and the cheap one (this runs for every send)
    plain = text.lower() if text.isascii() else unicodedata.normalize("NFKD", text).translate(_marks()).casefold()
    return list(dict.fromkeys(word[:MAX_TERM_CHARS] for word in _WORD.findall(plain)))


def indexed_text(body: str) -> str:
    """What the SQLite index stores for a message: its words, sorted, joined by spaces (a set: the
    index keeps which words a message has, not their order)."""
    return " ".join(sorted(terms(body)))


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What one search asks for: messages with every one of ``words``, newest first."""

    words: tuple[str, ...]
    conv: str | None = None  # only this conversation
    sender: str | None = None  # only messages from this user
    before: str | None = None  # a cursor: the page after the one that returned it
    limit: int = DEFAULT_SEARCH_LIMIT


def parse_query(text: str) -> tuple[str, ...]:
    """The words to search for; raises SearchQueryError for a query that cannot find anything."""
    if len(text) > MAX_QUERY_CHARS:
        raise SearchQueryError(f"q: at most {MAX_QUERY_CHARS} characters")
    words = terms(text)
    if not words:
        raise SearchQueryError("q: needs at least one word (letters or digits)")
    if len(words) > MAX_QUERY_TERMS:
        raise SearchQueryError(f"q: at most {MAX_QUERY_TERMS} different words")
    return tuple(words)


def fts5_match(words: Sequence[str]) -> str:
    """An FTS5 expression finding every word: each one a quoted string (a ``"`` inside is doubled,
    though ``terms`` never yields one), joined by spaces (FTS5's implicit AND)."""
    return " ".join(_quoted(word) for word in words)


def search_scope(conv: str, sender: str) -> str:
    """What the SQLite index keeps beside a message's words so a query can narrow by
    conversation and sender inside the index: one token each (their UTF-8 in hex, so any id is one
    token the tokenizer keeps whole)."""
    return f"c{conv.encode().hex()} u{sender.encode().hex()}"


def search_match(words: Sequence[str], convs: Sequence[str] = (), sender: str | None = None) -> str:
    """The FTS5 MATCH expression of a search: every word in the ``words`` column and, when given,
    one of ``convs`` and ``sender`` in the ``scope`` column."""
    match = f"words : ({fts5_match(words)})"
    if convs:
        match += " AND scope : (" + " OR ".join(_quoted(f"c{conv.encode().hex()}") for conv in convs) + ")"
    if sender is not None:
        match += f" AND scope : {_quoted(f'u{sender.encode().hex()}')}"
    return match


def _quoted(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def encode_cursor(position: Sequence[Any]) -> str:
    """An opaque cursor for a store's position in its newest-first order."""
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """A position ``encode_cursor`` made, checked to be a list of values of ``types``."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        position = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise SearchQueryError("before: not a cursor this search returned") from None
    if (not isinstance(position, list) or len(position) != len(types)
            or not all(type(v) is t for v, t in zip(position, types, strict=True))):  # fmt: skip
        raise SearchQueryError("before: not a cursor this search returned")
    return position
