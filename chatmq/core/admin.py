"""The operator's operations, written once for the `chatmq` admin commands (local mode) and the
admin HTTP API (chatmq/api/admin.py), which remote-mode commands call.

Every method answers plain JSON-ready data in the shape the HTTP API returns, so a command
prints the same thing whether it ran against the store here or against a server. Failures are
``AdminError`` with a code the API turns into its status (``not_found`` 404, ``conflict`` 409,
``bad_request`` 400, ``unavailable`` 503; any other code is a 400 that keeps its code, such as
``dotted_id``).

The running broker (clients, kick, stats) is reached through ``BrokerControl``: the admin channel
over MQTT (chatmq/clients/control.py), which chatmq.core itself may not import.

Deleting a user disables the account, revokes every token issued so far and closes its live
connections; with a ``Lifecycle`` (chatmq/core/lifecycle.py, always given by the commands and the
API) it erases the user's data as docs/data-lifecycle.md says. Redacting a message, deleting a
conversation and setting a conversation's retention go through the same ``Lifecycle``.

A membership change (adding or removing a member, deleting a conversation or a user) returns only
once ``memberships_applied`` says every live broker enforces it, as the API's own routes do
(chatmq.core.membershipsync): nothing said after `chatmq conv remove-member` returned reaches the
removed member.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chatmq.core import webhooks
from chatmq.core.auth import hash_password, issue_token, token_claims
from chatmq.core.config import ADMIN_USER
from chatmq.core.ids import DOTTED_ID, ID_PATTERN, dotted_conversation_id, is_valid_id
from chatmq.core.lifecycle import MAX_RETENTION_DAYS, Lifecycle
from chatmq.core.presence import Presence
from chatmq.core.profiles import check_avatar, clean_display_name
from chatmq.core.provisioning import (
    ConversationRow,
    Report,
    RowError,
    check_password_hash,
    parse_conversation,
    parse_user,
)
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import AlreadyExists, Conversation, NotFound, Store, User
from chatmq.core.store.base import (
    DELIVERY_DEAD,
    DELIVERY_PUSH,
    DELIVERY_STATES,
    DELIVERY_WEBHOOK,
    Delivery,
    NewUser,
    Webhook,
    now_ms,
)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_IMPORT_ROWS = 1000
MAX_IMPORT_PLAIN_PASSWORDS = 20  # argon2 at ~0.1 s each: hash the rest before sending (the CLI does)
MAX_TOKEN_TTL_S = 365 * 24 * 3600
MAX_REPLAY = 100_000  # dead letters one replay takes at most
DELIVERY_CHANNELS = (DELIVERY_PUSH, DELIVERY_WEBHOOK)
ADMIN_TOKEN_TTL_S = 3600
KEEP: Any = object()  # "leave this field as it is" in update_user


class AdminError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BrokerControl(Protocol):
    def request(self, command: str, args: dict[str, Any]) -> Any:
        """Send an admin-channel command (chatmq.core.control) to the running broker and return its
        result; AdminError("unavailable") when the broker cannot be asked, AdminError with the
        broker's error code when it refuses."""


def user_out(user: User) -> dict[str, Any]:
    return {"id": user.id, "display_name": user.display_name, "avatar": user.avatar, "disabled": user.disabled,
            "has_password": bool(user.password_hash), "created_at": user.created_at}


def conversation_out(conv: Conversation) -> dict[str, Any]:
    return {"id": conv.id, "title": conv.title, "owner": conv.owner, "members": list(conv.members),
            "created_at": conv.created_at, "last_seq": conv.last_seq, "first_seq": conv.first_seq,
            "retention_days": conv.retention_days}


def _page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise AdminError("bad_request", f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _require_id(value: str, kind: str) -> str:
    if not is_valid_id(value):
        raise AdminError("bad_request", f"{value!r} is not a valid {kind} id (must match {ID_PATTERN})")
    return value


@dataclass
class Admin:
    store: Store
    secret: str
    token_ttl_s: int
    revocations: TokenRevocations | None = None  # None: no Redis here (token revoke unavailable)
    presence_of: Presence | None = None
    broker: BrokerControl | None = None
    lifecycle: Lifecycle | None = None  # None: a delete only disables (tests of the account part alone)
    # Called with (user, plain password) after the store took a new password (Mosquitto as broker).
    password_set: Callable[[str, str], None] | None = None
    # Called after a membership change; returns once the live brokers enforce it
    # (chatmq.core.membershipsync.wait_applied). None: no brokers to wait for.
    memberships_applied: Callable[[], object] | None = None
    # False where the broker cannot route ids with a '.' (Settings.dotted_conversation_ids: RabbitMQ).
    dotted_conversation_ids: bool = True

    # --- users ---------------------------------------------------------------------------------
    def create_user(self, user_id: str, *, password: str | None = None, password_hash: str | None = None,
                    display_name: str | None = None, avatar: str | None = None) -> dict[str, Any]:
        _require_id(user_id, "user")
        if password is not None and password_hash is not None:
            raise AdminError("bad_request", "give password or password_hash, not both")
        stored_hash = self._password_hash(password, password_hash)
        try:
            user = self.store.create_user(user_id, stored_hash, display_name=_name(display_name),
                                          avatar=_avatar(avatar))
        except AlreadyExists:
            raise AdminError("conflict", f"user {user_id!r} already exists") from None
        if password and self.password_set is not None:
            self.password_set(user_id, password)
        return user_out(user)

    def list_users(self, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        size = _page_size(limit)
        users = self.store.list_users(after=after, limit=size + 1)
        page = users[:size]
        return {"users": [user_out(u) for u in page], "next": page[-1].id if len(users) > size else None}

    def get_user(self, user_id: str) -> dict[str, Any]:
        return user_out(self._user(user_id))

    def update_user(self, user_id: str, *, disabled: bool | None = None, password: str | None = None,
                    password_hash: str | None = None, display_name: Any = KEEP, avatar: Any = KEEP) -> dict[str, Any]:
        """Change what is given: disable/enable, a new password, profile fields (None clears one)."""
        user = self._user(user_id)
        if password is not None or password_hash is not None:
            if password is not None and password_hash is not None:
                raise AdminError("bad_request", "give password or password_hash, not both")
            self.store.set_password(user_id, self._password_hash(password, password_hash))
            if password and self.password_set is not None:
                self.password_set(user_id, password)
        if display_name is not KEEP or avatar is not KEEP:
            self.store.set_profile(user_id, user.display_name if display_name is KEEP else _name(display_name),
                                   user.avatar if avatar is KEEP else _avatar(avatar))
        if disabled is not None and disabled != user.disabled:
            self.store.set_disabled(user_id, disabled)
            if disabled:
                self._notify(user_id)  # live connections are checked again and closed within a second
                self._forget_push_targets(user_id)
        return user_out(self._user(user_id))

    def delete_user(self, user_id: str) -> dict[str, Any]:
        """Disable, revoke every token, close live connections, then erase the user's data
        (chatmq.core.lifecycle): run again, it finishes an erasure that was interrupted."""
        self._user(user_id)
        self.store.set_disabled(user_id, True)
        self._forget_push_targets(user_id)
        revoked = self._revoke_all(user_id)
        out: dict[str, Any] = {"id": user_id, "disabled": True, "tokens_revoked": revoked,
                               "erased": self.lifecycle is not None}
        if self.lifecycle is not None:
            report = self.lifecycle.erase_user(user_id)
            out.update(messages_erased=report["messages_erased"], reactions_erased=report["reactions_erased"],
                       conversations_left=report["conversations_left"])
            self._memberships_changed()
        return out

    def _forget_push_targets(self, user_id: str) -> None:
        """A disabled or deleted user's phones are not woken any more (a later login registers anew)."""
        for target in self.store.push_targets([user_id]):
            self.store.delete_push_target(user_id, target.device)

    def import_users(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One batch of user rows (the API's import request); errors name the row's index."""
        if len(rows) > MAX_IMPORT_ROWS:
            raise AdminError("bad_request", f"at most {MAX_IMPORT_ROWS} rows per request")
        report = Report()
        good: list[tuple[int, NewUser]] = []
        plain = 0
        for index, data in enumerate(rows):
            try:
                parsed = parse_user(data) if isinstance(data, dict) else _not_an_object()
            except RowError as exc:
                report.errors.append((index, str(exc)))
                continue
            user = parsed.user
            if parsed.password is not None:
                plain += 1
                if plain > MAX_IMPORT_PLAIN_PASSWORDS:
                    report.errors.append((index, f"more than {MAX_IMPORT_PLAIN_PASSWORDS} plain passwords in one "
                                                 "request: send password_hash (the chatmq CLI hashes for you)"))
                    continue
                user = NewUser(user.id, hash_password(parsed.password), user.display_name, user.avatar)
            good.append((index, user))
        for created in self.store.create_users([user for _, user in good]):
            if created:
                report.created += 1
            else:
                report.existing += 1
        payload = report.to_payload()
        payload["errors"] = [{"index": line, "error": why} for line, why in report.errors]
        return payload

    # --- conversations -------------------------------------------------------------------------
    def create_conversation(self, conv_id: str, members: Sequence[str], title: str | None = None) -> dict[str, Any]:
        row = self._conversation_row({"id": conv_id, "members": list(members), "title": title})
        self._routable(row.id)
        try:
            conv = self.store.create_conversation(row.id, row.members, title=row.title)
        except AlreadyExists:
            raise AdminError("conflict", f"conversation {conv_id!r} already exists") from None
        except NotFound as exc:
            raise AdminError("bad_request", str(exc)) from None
        return conversation_out(conv)

    def list_conversations(self, after: str | None = None, limit: int | None = None,
                           member: str | None = None) -> dict[str, Any]:
        size = _page_size(limit)
        convs = self.store.list_conversations(member=member, after=after, limit=size + 1)
        page = convs[:size]
        return {"conversations": [conversation_out(c) for c in page],
                "next": page[-1].id if len(convs) > size else None}

    def get_conversation(self, conv_id: str) -> dict[str, Any]:
        return conversation_out(self._conversation(conv_id))

    def set_title(self, conv_id: str, title: str | None) -> dict[str, Any]:
        self._conversation(conv_id)
        if title is not None and len(title) > 200:
            raise AdminError("bad_request", "title is longer than 200 characters")
        self.store.set_title(conv_id, title)
        return self.get_conversation(conv_id)

    def add_member(self, conv_id: str, user_id: str) -> dict[str, Any]:
        conv = self._conversation(conv_id)
        self._user(user_id)
        if user_id in conv.members:
            raise AdminError("conflict", f"{user_id} is already a member of {conv_id}")
        self.store.add_member(conv_id, user_id)
        self._memberships_changed()
        return self.get_conversation(conv_id)

    def remove_member(self, conv_id: str, user_id: str) -> dict[str, Any]:
        conv = self._conversation(conv_id)
        if user_id not in conv.members:
            raise AdminError("not_found", f"{user_id} is not a member of {conv_id}")
        self.store.remove_member(conv_id, user_id)
        self._memberships_changed()
        return self.get_conversation(conv_id)

    def import_conversations(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Create each conversation, or add the members an existing one lacks (never removes)."""
        if len(rows) > MAX_IMPORT_ROWS:
            raise AdminError("bad_request", f"at most {MAX_IMPORT_ROWS} rows per request")
        report = Report()
        for index, data in enumerate(rows):
            try:
                row = parse_conversation(data) if isinstance(data, dict) else _not_an_object()
                outcome = self._import_conversation(row)
            except (RowError, AdminError, NotFound) as exc:
                report.errors.append((index, getattr(exc, "message", None) or str(exc)))
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
        payload = report.to_payload()
        payload["errors"] = [{"index": line, "error": why} for line, why in report.errors]
        return payload

    def _import_conversation(self, row: ConversationRow) -> str:
        missing = set(row.members) - {u.id for u in self.store.get_users(row.members)}
        if missing:
            raise RowError(f"unknown member(s) {', '.join(sorted(missing))}")
        existing = self.store.get_conversation(row.id)
        if existing is None:
            self._routable(row.id)
            try:
                self.store.create_conversation(row.id, row.members, title=row.title)
                return "created"
            except AlreadyExists:  # created meanwhile: add what it lacks below
                existing = self._conversation(row.id)
        lacking = sorted(set(row.members) - set(existing.members))
        for user in lacking:
            self.store.add_member(row.id, user)
        return "updated" if lacking else "existing"

    def delete_conversation(self, conv_id: str) -> dict[str, Any]:
        """Delete the conversation with its whole log, state, media and delivery log."""
        self._conversation(conv_id)
        try:
            deleted = self._lifecycle().delete_conversation(conv_id)
        except NotFound:  # deleted meanwhile
            raise AdminError("not_found", f"unknown conversation {conv_id!r}") from None
        self._memberships_changed()
        return deleted

    def redact_message(self, conv_id: str, seq: int) -> dict[str, Any]:
        """Erase one message as the operator: a tombstone like a deletion, by ``@admin``."""
        self._conversation(conv_id)
        erased = self._lifecycle().redact(conv_id, [seq])
        if not erased.seqs:
            (entry,) = self.store.history(conv_id, after=seq - 1, before=seq + 1, limit=1).messages or (None,)
            if entry is None:
                raise AdminError("not_found", f"no entry with seq {seq} in {conv_id!r}")
            what = "a " + entry.kind if entry.kind != "message" else "deleted already"
            raise AdminError("conflict", f"seq {seq} of {conv_id!r} is {what}: nothing to redact")
        return {"conv": conv_id, "seq": seq, "redacted": True, "media": len(erased.media)}

    def set_retention(self, conv_id: str, days: int | None) -> dict[str, Any]:
        """Keep the conversation's log ``days`` days (0: forever; None: the deployment's default)."""
        self._conversation(conv_id)
        if days is not None and not 0 <= days <= MAX_RETENTION_DAYS:
            raise AdminError("bad_request", f"days must be between 0 (forever) and {MAX_RETENTION_DAYS}")
        self.store.set_retention(conv_id, days)
        return self.get_conversation(conv_id)

    def history(self, conv_id: str, *, before: int | None = None, after: int | None = None,
                limit: int = 50) -> dict[str, Any]:
        conv = self._conversation(conv_id)
        page = self.store.history(conv_id, before=before, after=after, limit=max(1, min(limit, 200)))
        return {"messages": [m.to_payload() for m in page.messages], "has_more": page.has_more,
                "first_seq": conv.first_seq}

    def presence(self, user_id: str) -> dict[str, Any]:
        self._user(user_id)
        if self.presence_of is None:
            raise AdminError("unavailable", "presence needs Redis, which is not configured here")
        return self.presence_of.get(user_id, int(time.time() * 1000)).to_payload()

    # --- tokens --------------------------------------------------------------------------------
    def issue_token(self, user_id: str | None, ttl_s: int | None = None, *, admin: bool = False) -> dict[str, Any]:
        """A user's token (usable as MQTT password and bearer token), or with ``admin`` an
        admin-scoped token (the admin API and the admin channel only)."""
        if ttl_s is not None and not 60 <= ttl_s <= MAX_TOKEN_TTL_S:
            raise AdminError("bad_request", f"ttl_s must be between 60 and {MAX_TOKEN_TTL_S}")
        if admin:
            issued = issue_token(self.secret, ADMIN_USER, ttl_s or ADMIN_TOKEN_TTL_S, admin=True)
            return {"user": ADMIN_USER, "token": issued.token, "expires_at": issued.expires_at}
        if user_id is None:
            raise AdminError("bad_request", "a user token needs the user")
        if self._user(user_id).disabled:
            raise AdminError("conflict", f"user {user_id!r} is disabled")
        issued = issue_token(self.secret, user_id, ttl_s or self.token_ttl_s)
        return {"user": user_id, "token": issued.token, "expires_at": issued.expires_at}

    def revoke_tokens(self, user_id: str | None = None, token: str | None = None) -> dict[str, Any]:
        """Every token of the user issued until now, or one token; live logins with them close."""
        if (user_id is None) == (token is None):
            raise AdminError("bad_request", "give exactly one of user or token")
        revocations = self._revocations()
        if token is not None:
            claims = token_claims(self.secret, token.strip())
            if claims is None:
                raise AdminError("bad_request", "not a valid token of this deployment (forged, malformed or expired)")
            if not revocations.revoke_token(claims):
                raise AdminError("bad_request", "this token cannot be revoked (it has no id or has expired)")
            return {"user": str(claims["sub"]), "revoked": "token"}
        assert user_id is not None
        self._user(user_id)
        self._revoke_all(user_id)
        return {"user": user_id, "revoked": "all"}

    # --- the running broker -----------------------------------------------------------------------
    def clients(self, user: str | None = None) -> list[dict[str, Any]]:
        return list(self._broker().request("clients", {"user": user} if user else {}))

    def kick(self, user: str | None = None, client_id: str | None = None, *, disable: bool = False) -> dict[str, Any]:
        if (user is None) == (client_id is None):
            raise AdminError("bad_request", "give exactly one of user or client_id")
        if disable and user is None:
            raise AdminError("bad_request", "disable needs the user")
        if user is not None:
            self._user(user)
            if disable:
                self.store.set_disabled(user, True)
        try:
            result = self._broker().request("kick", {"user": user} if user else {"client_id": client_id})
        except AdminError as exc:
            if exc.code == "unknown_client":
                raise AdminError("not_found", f"unknown client id {client_id!r} (not connected)") from None
            raise
        return {"kicked": list(result["kicked"]), "disabled": disable}

    # --- push targets, webhooks and the delivery log (the notifier's: docs/protocol.md) ---------------
    def push_targets(self, user_id: str) -> dict[str, Any]:
        """The devices ``user_id`` registered for push (POST /v1/push/targets)."""
        self._user(user_id)
        return {"targets": [{"device": t.device, "platform": t.platform, "token": t.token, "app_id": t.app_id,
                             "preview": t.preview, "updated_at": t.updated_at}
                            for t in self.store.push_targets([user_id])]}  # fmt: skip

    def add_webhook(self, webhook_id: str, url: str, events: Sequence[str] | None = None,
                    secret: str | None = None) -> dict[str, Any]:
        """Subscribe ``url`` to ``events`` (all by default); the answer shows the signing secret,
        the only one that does."""
        _require_id(webhook_id, "webhook")
        if not url.startswith(("http://", "https://")):
            raise AdminError("bad_request", "url: must be an http:// or https:// URL")
        chosen = webhook_events(webhooks.EVENT_TYPES if events is None else events)
        if secret is not None and len(secret) < 16:
            raise AdminError("bad_request", "secret: at least 16 characters (or leave it out for a random one)")
        try:
            hook = self.store.add_webhook(Webhook(webhook_id, url, secret or webhooks.new_secret(), chosen, now_ms()))
        except AlreadyExists:
            raise AdminError("conflict", f"webhook {webhook_id!r} already exists") from None
        return {**webhook_out(hook), "secret": hook.secret}

    def list_webhooks(self, *, secrets: bool = False) -> dict[str, Any]:
        """Every subscription; with ``secrets`` (the local command's --show-secrets, never the API)
        their signing secrets too."""
        return {"webhooks": [{**webhook_out(hook), **({"secret": hook.secret} if secrets else {})}
                             for hook in self.store.webhooks()]}  # fmt: skip

    def remove_webhook(self, webhook_id: str) -> dict[str, Any]:
        if not self.store.remove_webhook(webhook_id):
            raise AdminError("not_found", f"no webhook {webhook_id!r}")
        return {"id": webhook_id, "removed": True}

    def deliveries(self, channel: str | None = None, state: str | None = None, target: str | None = None,
                   limit: int | None = None) -> dict[str, Any]:
        """The delivery log (push and webhooks), newest first, filtered."""
        _choice(channel, DELIVERY_CHANNELS, "channel")
        _choice(state, DELIVERY_STATES, "state")
        found = self.store.list_deliveries(channel=channel, state=state, target=target, limit=_page_size(limit))
        return {"deliveries": [delivery_out(d) for d in found]}

    def replay_deliveries(self, ids: Sequence[str] = (), *, dead: bool = False, channel: str | None = None,
                          target: str | None = None) -> dict[str, Any]:
        return {"replayed": replay_deliveries(self.store, ids, dead=dead, channel=channel, target=target)}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"users": self.store.count_users(), "conversations": self.store.count_conversations()}
        try:
            out["broker"] = self._broker().request("stats", {})
        except AdminError as exc:
            out["broker"] = {"error": exc.message}
        return out

    # --- helpers -----------------------------------------------------------------------------------
    def _password_hash(self, password: str | None, password_hash: str | None) -> str:
        if password_hash is not None:
            try:
                return check_password_hash(password_hash)
            except RowError as exc:
                raise AdminError("bad_request", str(exc)) from None
        if password is not None:
            if not password:
                raise AdminError("bad_request", "the password must not be empty")
            return hash_password(password)
        return ""  # no password: external identity tokens only

    def _user(self, user_id: str) -> User:
        user = self.store.get_user(user_id) if is_valid_id(user_id) else None
        if user is None:
            raise AdminError("not_found", f"unknown user {user_id!r}")
        return user

    def _conversation(self, conv_id: str) -> Conversation:
        conv = self.store.get_conversation(conv_id) if is_valid_id(conv_id) else None
        if conv is None:
            raise AdminError("not_found", f"unknown conversation {conv_id!r}")
        return conv

    def _routable(self, conv_id: str) -> None:
        problem = None if self.dotted_conversation_ids else dotted_conversation_id(conv_id)
        if problem is not None:
            raise AdminError(DOTTED_ID, problem)

    def _conversation_row(self, data: dict[str, Any]) -> ConversationRow:
        try:
            return parse_conversation({k: v for k, v in data.items() if v is not None})
        except RowError as exc:
            raise AdminError("bad_request", str(exc)) from None

    def _revocations(self) -> TokenRevocations:
        if self.revocations is None:
            raise AdminError("unavailable", "token revocation needs Redis, which is not configured here")
        return self.revocations

    def _revoke_all(self, user_id: str) -> bool:
        try:
            self._revocations().revoke_user(user_id)
        except Exception as exc:  # Redis down: say so; the account is disabled all the same
            if isinstance(exc, AdminError):
                raise
            raise AdminError("unavailable", f"cannot reach Redis to revoke tokens: {exc}") from None
        return True

    def _notify(self, user_id: str) -> None:
        if self.revocations is None:
            return
        with contextlib.suppress(Exception):  # best effort: the next login is checked anyway
            self.revocations.notify(user_id)

    def _memberships_changed(self) -> None:
        if self.memberships_applied is not None:
            self.memberships_applied()

    def _lifecycle(self) -> Lifecycle:
        if self.lifecycle is None:
            raise AdminError("unavailable", "data lifecycle operations are not configured here")
        return self.lifecycle

    def _broker(self) -> BrokerControl:
        if self.broker is None:
            raise AdminError("unavailable", "no broker admin channel is configured here")
        return self.broker


def _name(value: str | None) -> str | None:
    try:
        return clean_display_name(value)
    except ValueError as exc:
        raise AdminError("bad_request", str(exc)) from None


def _avatar(value: str | None) -> str | None:
    try:
        return check_avatar(value)
    except ValueError as exc:
        raise AdminError("bad_request", str(exc)) from None


def _not_an_object() -> Any:
    raise RowError("a row must be a JSON object")


# --- webhooks and deliveries: shared with `chatmq webhook` / `chatmq push` (chatmq/cli/notify_cmd.py) --
def webhook_events(events: Sequence[str]) -> tuple[str, ...]:
    """The event types asked for, each once, in the order given; AdminError for an unknown one."""
    chosen = tuple(dict.fromkeys(e.strip() for e in events if e.strip()))
    unknown = [e for e in chosen if e not in webhooks.EVENT_TYPES]
    if unknown or not chosen:
        raise AdminError("bad_request", f"events: choose from {', '.join(webhooks.EVENT_TYPES)} "
                                        f"(got {', '.join(unknown) or 'none'})")
    return chosen


def webhook_out(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "events": list(hook.events), "created_at": hook.created_at}


def delivery_out(delivery: Delivery) -> dict[str, Any]:
    return {"id": delivery.id, "channel": delivery.channel, "target": delivery.target, "state": delivery.state,
            "attempts": delivery.attempts, "next_at": delivery.next_at, "created_at": delivery.created_at,
            "updated_at": delivery.updated_at, "last_error": delivery.last_error,
            "payload": delivery.payload}  # fmt: skip


def replay_deliveries(store: Store, ids: Sequence[str] = (), *, dead: bool = False, channel: str | None = None,
                      target: str | None = None) -> int:
    """Make deliveries pending again with their original idempotency key: ``ids``, and with ``dead``
    every dead letter (of ``channel`` and ``target`` when given). Returns how many; AdminError names
    ids that are not deliveries (of ``channel``), and nothing is replayed then."""
    _choice(channel, DELIVERY_CHANNELS, "channel")
    chosen = list(dict.fromkeys(ids))
    if dead:
        chosen += [d.id for d in store.list_deliveries(channel=channel, state=DELIVERY_DEAD, target=target,
                                                       limit=MAX_REPLAY)]  # fmt: skip
    if not chosen:
        raise AdminError("bad_request", "name deliveries to replay, or ask for the dead ones")
    known = {i for i in chosen if (d := store.get_delivery(i)) is not None and channel in (None, d.channel)}
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise AdminError("not_found", f"no {channel + ' ' if channel else ''}delivery {', '.join(unknown)}")
    return store.replay_deliveries(sorted(known), now_ms())


def _choice(value: str | None, allowed: Sequence[str], what: str) -> None:
    if value is not None and value not in allowed:
        raise AdminError("bad_request", f"{what}: one of {', '.join(allowed)} (got {value!r})")
