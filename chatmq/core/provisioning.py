"""Bulk provisioning: users (and conversations with members) from CSV or JSON Lines.

The file is read and every row checked here, once, for the admin CLI (local or remote) and the
admin HTTP API alike; what is written goes through ``Store.create_users`` in batches, so a re-run
creates nothing that exists already (idempotent) and a bad row is reported by its line number
without stopping the others.

Password hashing is the cost of creating users (argon2 is slow on purpose, ~0.05-0.1 s of CPU
each), so a row may bring its password already hashed (``password_hash``: an argon2 hash as
argon2-cffi writes it, e.g. exported from another system using argon2) or no password at all (a
user who logs in with the identity provider's tokens, chatmq.core.identity). Plain ``password``
values are hashed by the importing process on a thread pool (argon2-cffi releases the GIL).

User rows: ``id`` (required), ``password`` or ``password_hash`` (at most one), ``display_name``,
``avatar``. Conversation rows: ``id`` (required), ``title``, ``members`` (a JSON list, or in CSV
the ids separated by spaces).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from argon2 import extract_parameters
from argon2.exceptions import InvalidHashError

from chatmq.core.auth import hash_password
from chatmq.core.ids import ID_PATTERN, is_valid_id
from chatmq.core.profiles import check_avatar, clean_display_name
from chatmq.core.store.base import NewUser

USER_FIELDS = ("id", "password", "password_hash", "display_name", "avatar")
CONVERSATION_FIELDS = ("id", "title", "members")
MAX_TITLE_CHARS = 200
MAX_MEMBERS = 5000
FORMATS = ("csv", "jsonl")


class RowError(ValueError):
    """One row that cannot be imported; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # 1-based line of the file (the header is line 1 in CSV)
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UserRow:
    user: NewUser
    password: str | None = None  # plain text still to hash (never sent anywhere as it is)


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    members: tuple[str, ...]
    title: str | None = None


@dataclass
class Report:
    """What an import did, row by row: counts and the errors with their line numbers."""

    created: int = 0
    existing: int = 0  # already there: left as they were
    updated: int = 0  # conversations that gained members they lacked
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, why)

    @property
    def rows(self) -> int:
        return self.created + self.existing + self.updated + len(self.errors)

    def to_payload(self) -> dict[str, Any]:
        return {"created": self.created, "existing": self.existing, "updated": self.updated,
                "errors": [{"line": line, "error": why} for line, why in self.errors]}


def guess_format(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {name!r} from its name: say --format csv or jsonl")


def read_rows(stream: TextIO, fmt: str, errors: list[tuple[int, str]]) -> Iterator[Row]:
    """The rows of a CSV (with a header line) or JSON Lines stream; unreadable lines go to
    ``errors`` instead. Blank lines are skipped."""
    if fmt == "csv":
        reader = csv.DictReader(stream)
        for record in reader:
            line = reader.line_num
            if None in record:
                errors.append((line, "more values than the header has columns"))
                continue
            if not any((value or "").strip() for value in record.values()):
                continue
            yield Row(line, {k.strip(): v for k, v in record.items() if k is not None and v not in (None, "")})
        return
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            errors.append((line, f"not JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            errors.append((line, "a row must be a JSON object"))
            continue
        yield Row(line, data)


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RowError(f"{name} must be a string")
    return value


def _unknown_fields(data: dict[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RowError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(known)})")


def check_password_hash(value: str) -> str:
    try:
        extract_parameters(value)
    except (InvalidHashError, ValueError):
        raise RowError("password_hash is not an argon2 hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash)") from None
    return value


def parse_user(data: dict[str, Any]) -> UserRow:
    """One user row, checked; RowError says what is wrong with it."""
    _unknown_fields(data, USER_FIELDS)
    user_id = _text(data, "id")
    if user_id is None or not is_valid_id(user_id):
        raise RowError(f"id {user_id!r} is not a valid user id (must match {ID_PATTERN})")
    password, password_hash = _text(data, "password"), _text(data, "password_hash")
    if password is not None and password_hash is not None:
        raise RowError("give password or password_hash, not both")
    if password_hash is not None:
        check_password_hash(password_hash)
    try:
        name = clean_display_name(_text(data, "display_name"))
        avatar = check_avatar(_text(data, "avatar"))
    except ValueError as exc:
        raise RowError(str(exc)) from None
    return UserRow(NewUser(user_id, password_hash or "", name, avatar), password)


def parse_conversation(data: dict[str, Any]) -> ConversationRow:
    _unknown_fields(data, CONVERSATION_FIELDS)
    conv_id = _text(data, "id")
    if conv_id is None or not is_valid_id(conv_id) or conv_id in (".", ".."):
        raise RowError(f"id {conv_id!r} is not a valid conversation id (must match {ID_PATTERN})")
    title = _text(data, "title")
    if title is not None and len(title) > MAX_TITLE_CHARS:
        raise RowError(f"title is longer than {MAX_TITLE_CHARS} characters")
    members = data.get("members")
    if isinstance(members, str):
        members = members.split()
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise RowError("members must be a non-empty list of user ids")
    bad = [m for m in members if not is_valid_id(m)]
    if bad:
        raise RowError(f"member {bad[0]!r} is not a valid user id")
    if len(set(members)) > MAX_MEMBERS:
        raise RowError(f"more than {MAX_MEMBERS} members")
    return ConversationRow(conv_id, tuple(sorted(set(members))), title)


def hash_passwords(rows: Sequence[UserRow], workers: int,
                   progress: Callable[[int], None] | None = None) -> list[NewUser]:
    """The users with their plain passwords hashed (on ``workers`` threads); ``progress(n)`` is
    called as passwords are done."""
    plain = [index for index, row in enumerate(rows) if row.password is not None]
    users = [row.user for row in rows]
    if not plain:
        return users
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="chatmq-import-hash") as pool:
        for index, hashed in zip(plain, pool.map(lambda i: hash_password(rows[i].password or ""), plain),
                                 strict=True):
            user = users[index]
            users[index] = NewUser(user.id, hashed, user.display_name, user.avatar)
            if progress is not None:
                progress(1)
    return users


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def user_payload(user: NewUser) -> dict[str, Any]:
    """A checked user as a row of the admin API's import request (no plain password in it)."""
    row: dict[str, Any] = {"id": user.id}
    if user.password_hash:
        row["password_hash"] = user.password_hash
    if user.display_name is not None:
        row["display_name"] = user.display_name
    if user.avatar is not None:
        row["avatar"] = user.avatar
    return row


def conversation_payload(conv: ConversationRow) -> dict[str, Any]:
    row: dict[str, Any] = {"id": conv.id, "members": list(conv.members)}
    if conv.title is not None:
        row["title"] = conv.title
    return row


def csv_text(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    """Rows as CSV text with a header (test data, examples)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (" ".join(v) if isinstance(v, list) else v) for k, v in row.items()})
    return out.getvalue()
