"""``/v1/admin``: everything the `chatmq` admin commands do, over HTTP with an admin-scoped token.

Users (create, page through, change, disable, delete), bulk import of users and conversations,
conversations and members, history, presence, tokens (issue, revoke), the broker's connected
clients, kick, stats, and the notifier's webhook subscriptions and delivery log (dead letters,
replay). The operations themselves are chatmq.core.admin's, shared with the local
commands; this module is the HTTP skin and the broker's admin channel (chatmq/clients/control.py).

Every route here is behind ``require_admin``: no token or a bad one is 401, a valid token that is
not admin-scoped (any user's, the identity provider's) is 403. Admin tokens come from
``chatmq token issue --admin`` (signed with the deployment's secret key, no store access needed)
or from ``POST /v1/admin/tokens`` with ``"admin": true``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api.bearer import SECURITY, bearer_token, revoked, verified_claims
from chatmq.api.context import get_context
from chatmq.api.conversations import MessagesResponse
from chatmq.api.errors import ApiError, error_responses
from chatmq.api.media import media_store
from chatmq.api.presence import PresenceResponse
from chatmq.api.push import TargetsResponse
from chatmq.api.querymodel import QueryModel
from chatmq.clients.control import ControlClient, ControlRefused, ControlUnreachable
from chatmq.core.admin import (
    KEEP,
    MAX_IMPORT_ROWS,
    MAX_PAGE,
    MAX_REPLAY,
    MAX_TOKEN_TTL_S,
    Admin,
    AdminError,
)
from chatmq.core.auth import claims_identity, issue_token
from chatmq.core.config import ADMIN_USER
from chatmq.core.lifecycle import MAX_RETENTION_DAYS, Lifecycle
from chatmq.core.membershipsync import wait_applied
from chatmq.core.revocation import TokenRevocations

IMPORT_BODY_BYTES = 8 * 1024 * 1024  # a batch of MAX_IMPORT_ROWS rows with argon2 hashes: ~0.2 MB
_STATUS = {"bad_request": 400, "not_found": 404, "conflict": 409, "unavailable": 503}

bp = APIBlueprint(
    "admin",
    __name__,
    url_prefix="/v1/admin",
    abp_tags=[Tag(name="admin", description="operator API: needs an admin-scoped token")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 403, 404, 500, 503),
)


@bp.before_request
def require_admin() -> None:
    ctx = get_context()
    claims = verified_claims(ctx, bearer_token())
    if claims is None or revoked(ctx, claims):
        raise ApiError(401, "invalid or expired token")
    if not claims_identity(claims).is_admin:
        raise ApiError(403, "an admin-scoped token is needed (chatmq token issue --admin)")
    if request.endpoint in (f"{bp.name}.{import_users.__name__}", f"{bp.name}.{import_conversations.__name__}"):
        request.max_content_length = IMPORT_BODY_BYTES


class BrokerChannel:
    """chatmq.core.admin.BrokerControl over the admin channel: one short connection per request."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self._host, self._port, self._secret = host, port, secret

    def request(self, command: str, args: dict[str, Any]) -> Any:
        token = issue_token(self._secret, ADMIN_USER, 60, admin=True).token
        try:
            with ControlClient(self._host, self._port, ADMIN_USER, token) as channel:
                return channel.request(command, args)
        except ControlUnreachable as exc:
            raise AdminError("unavailable", f"the broker's admin channel: {exc}") from None
        except ControlRefused as exc:
            raise AdminError("unavailable" if exc.code == "login_refused" else exc.code, exc.message) from None


def _admin() -> Admin:
    ctx = get_context()
    settings = ctx.settings
    return Admin(
        store=ctx.store, secret=ctx.secret, token_ttl_s=settings.token_ttl_s,
        revocations=TokenRevocations(ctx.redis, max(settings.token_ttl_s, MAX_TOKEN_TTL_S)),
        presence_of=ctx.presence,
        broker=BrokerChannel(settings.broker_host, settings.resolved_broker_port, ctx.secret),
        lifecycle=Lifecycle(ctx.store, media_store(), ctx.presence),
        memberships_applied=partial(wait_applied, ctx.redis, ctx.store.membership_version,
                                    settings.membership_apply_timeout_s),
        dotted_conversation_ids=settings.dotted_conversation_ids,
    )  # fmt: skip


def _answer(result: Any, status: int = 200) -> Response:
    response = jsonify(result)
    response.status_code = status
    return response


def _run(operation: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(_admin(), operation)(*args, **kwargs)
    except AdminError as exc:
        raise ApiError(_STATUS.get(exc.code, 400), exc.message, exc.code) from None


# --- models -------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UserOut(BaseModel):
    id: str
    display_name: str | None
    avatar: str | None = Field(description="media id")
    disabled: bool
    has_password: bool = Field(description="false: logs in with identity provider tokens only")
    created_at: int = Field(description="ms since epoch")


class UsersPage(BaseModel):
    users: list[UserOut]
    next: str | None = Field(description="pass as `after` for the next page; null on the last")


class UserCreate(_Strict):
    id: str
    password: str | None = Field(default=None, max_length=4096)
    password_hash: str | None = Field(default=None, max_length=1024, description="an argon2 hash instead")
    display_name: str | None = None
    avatar: str | None = None


class UserPatch(_Strict):
    disabled: bool | None = None
    password: str | None = Field(default=None, max_length=4096)
    password_hash: str | None = Field(default=None, max_length=1024)
    display_name: str | None = Field(default=None, description="null clears it; left out: unchanged")
    avatar: str | None = Field(default=None, description="null clears it; left out: unchanged")


class UserDeleted(BaseModel):
    id: str
    disabled: bool
    tokens_revoked: bool
    erased: bool = Field(description="whether the user's data was erased too (docs/data-lifecycle.md)")
    messages_erased: int = Field(default=0, description="messages made tombstones by this call")
    reactions_erased: int = Field(default=0)
    conversations_left: list[str] = Field(default_factory=list, description="removed from these")


class PageQuery(QueryModel):
    after: str | None = Field(default=None, max_length=64, description="the last id of the previous page")
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class ConvPageQuery(PageQuery):
    member: str | None = Field(default=None, max_length=64, description="only this user's conversations")


class UserPath(BaseModel):
    user: str


class ConvPath(BaseModel):
    conv: str


class MemberPath(BaseModel):
    conv: str
    user: str


class ImportUsers(BaseModel):
    users: list[Any] = Field(max_length=MAX_IMPORT_ROWS, description="rows: id, password_hash or password, "
                             "display_name, avatar (docs/protocol.md)")


class ImportConversations(BaseModel):
    conversations: list[Any] = Field(max_length=MAX_IMPORT_ROWS, description="rows: id, title, members")


class ImportError_(BaseModel):
    index: int = Field(description="the row's position in the request")
    error: str


class ImportReport(BaseModel):
    created: int
    existing: int = Field(description="already there, left unchanged")
    updated: int = Field(description="conversations that gained members they lacked")
    errors: list[ImportError_]


class ConvOut(BaseModel):
    id: str
    title: str | None
    owner: str | None
    members: list[str]
    created_at: int
    last_seq: int
    first_seq: int = Field(description="where the retained log starts: seqs below it were purged by retention")
    retention_days: int | None = Field(description="null: the deployment's default; 0: kept forever")


class ConvsPage(BaseModel):
    conversations: list[ConvOut]
    next: str | None


class ConvCreate(_Strict):
    id: str
    members: list[str] = Field(min_length=1, max_length=5000)
    title: str | None = Field(default=None, max_length=200)


class ConvPatch(_Strict):
    title: str | None = Field(max_length=200, description="null removes the title")


class RetentionSet(_Strict):
    days: int | None = Field(ge=0, le=MAX_RETENTION_DAYS, description="0: forever; null: the deployment's default")


class ConvDeleted(BaseModel):
    id: str
    deleted: bool
    media: int = Field(description="uploads its messages attached, erased unless attached elsewhere")


class MessagePath(BaseModel):
    conv: str
    seq: int = Field(ge=1, le=2**63 - 1)


class Redacted(BaseModel):
    conv: str
    seq: int
    redacted: bool
    media: int


class MemberAdd(_Strict):
    user: str


class HistoryQuery(QueryModel):
    before: int | None = Field(default=None, ge=1, le=2**63 - 1)
    after: int | None = Field(default=None, ge=0, le=2**63 - 1)
    limit: int = Field(default=50, ge=1, le=200)


class TokenRequest(_Strict):
    user: str | None = Field(default=None, description="whose token; leave out with admin")
    ttl_s: int | None = Field(default=None, ge=60, le=MAX_TOKEN_TTL_S)
    admin: bool = Field(default=False, description="an admin-scoped token (1 h by default)")


class TokenOut(BaseModel):
    user: str
    token: str
    expires_at: int = Field(description="ms since epoch")


class RevokeRequest(_Strict):
    user: str | None = Field(default=None, description="every token of this user issued until now")
    token: str | None = Field(default=None, max_length=4096, description="or this one token")


class RevokeOut(BaseModel):
    user: str
    revoked: str = Field(description="all | token")


class ClientsQuery(QueryModel):
    user: str | None = Field(default=None, max_length=64)


class ClientOut(BaseModel):
    client_id: str
    user: str | None
    address: str
    connected_since: int | None
    keepalive_s: float
    subscriptions: int
    queued: int
    clean_session: bool


class ClientsOut(BaseModel):
    clients: list[ClientOut]


class KickRequest(_Strict):
    user: str | None = None
    client_id: str | None = Field(default=None, max_length=256)
    disable: bool = Field(default=False, description="also disable the user")


class KickOut(BaseModel):
    kicked: list[str]
    disabled: bool


class StatsOut(BaseModel):
    users: int
    conversations: int
    broker: dict[str, Any] = Field(description="the broker's admin-channel stats, or {error}")


# --- users --------------------------------------------------------------------------------------
@bp.post("/users", responses={201: UserOut, **error_responses(409)})
def create_user(body: UserCreate) -> Response:
    """Create a user: with a password, an argon2 password hash, or none (identity provider logins)."""
    return _answer(_run("create_user", body.id, password=body.password, password_hash=body.password_hash,
                        display_name=body.display_name, avatar=body.avatar), 201)


@bp.get("/users", responses={200: UsersPage})
def list_users(query: PageQuery) -> Response:
    """Users ordered by id, a page at a time."""
    return _answer(_run("list_users", query.after, query.limit))


@bp.get("/users/<user>", responses={200: UserOut})
def get_user(path: UserPath) -> Response:
    """One user."""
    return _answer(_run("get_user", path.user))


@bp.patch("/users/<user>", responses={200: UserOut})
def update_user(path: UserPath, body: UserPatch) -> Response:
    """Disable or enable, set a password, change profile fields; what is left out stays."""
    given = body.model_fields_set
    return _answer(_run(
        "update_user", path.user, disabled=body.disabled, password=body.password, password_hash=body.password_hash,
        display_name=body.display_name if "display_name" in given else KEEP,
        avatar=body.avatar if "avatar" in given else KEEP,
    ))  # fmt: skip


@bp.delete("/users/<user>", responses={200: UserDeleted})
def delete_user(path: UserPath) -> Response:
    """Delete a user: disabled, every token revoked, live connections closed (see docs/protocol.md)."""
    return _answer(_run("delete_user", path.user))


@bp.post("/users/import", responses={200: ImportReport, **error_responses(413)})
def import_users(body: ImportUsers) -> Response:
    """Create up to 1,000 users; existing ids are left as they are (re-running is safe)."""
    return _answer(_run("import_users", body.users))


@bp.get("/users/<user>/presence", responses={200: PresenceResponse})
def user_presence(path: UserPath) -> Response:
    """A user's presence (online while any device is)."""
    return _answer(_run("presence", path.user))


@bp.get("/users/<user>/push-targets", responses={200: TargetsResponse})
def user_push_targets(path: UserPath) -> Response:
    """The devices a user registered for push notifications."""
    return _answer(_run("push_targets", path.user))


# --- conversations --------------------------------------------------------------------------------
@bp.post("/conversations", responses={201: ConvOut, **error_responses(409)})
def create_conversation(body: ConvCreate) -> Response:
    """Create a conversation managed by admins (no owner)."""
    return _answer(_run("create_conversation", body.id, body.members, body.title), 201)


@bp.get("/conversations", responses={200: ConvsPage})
def list_conversations(query: ConvPageQuery) -> Response:
    """Conversations ordered by id, a page at a time (optionally one member's)."""
    return _answer(_run("list_conversations", query.after, query.limit, query.member))


@bp.post("/conversations/import", responses={200: ImportReport, **error_responses(413)})
def import_conversations(body: ImportConversations) -> Response:
    """Create up to 1,000 conversations, or add the members an existing one lacks."""
    return _answer(_run("import_conversations", body.conversations))


@bp.get("/conversations/<conv>", responses={200: ConvOut})
def get_conversation(path: ConvPath) -> Response:
    """One conversation."""
    return _answer(_run("get_conversation", path.conv))


@bp.patch("/conversations/<conv>", responses={200: ConvOut})
def rename_conversation(path: ConvPath, body: ConvPatch) -> Response:
    """Rename a conversation."""
    return _answer(_run("set_title", path.conv, body.title))


@bp.delete("/conversations/<conv>", responses={200: ConvDeleted})
def delete_conversation(path: ConvPath) -> Response:
    """Delete a conversation with its whole log, media, receipts and delivery log (members are told)."""
    return _answer(_run("delete_conversation", path.conv))


@bp.put("/conversations/<conv>/retention", responses={200: ConvOut})
def set_retention(path: ConvPath, body: RetentionSet) -> Response:
    """Keep the conversation's log N days (0: forever; null: the deployment's default)."""
    return _answer(_run("set_retention", path.conv, body.days))


@bp.delete("/conversations/<conv>/messages/<int:seq>", responses={200: Redacted, **error_responses(409)})
def redact_message(path: MessagePath) -> Response:
    """Redact one message: a tombstone as a deletion makes, by @admin (409: not a message, or deleted)."""
    return _answer(_run("redact_message", path.conv, path.seq))


@bp.post("/conversations/<conv>/members", responses={200: ConvOut, **error_responses(409)})
def add_member(path: ConvPath, body: MemberAdd) -> Response:
    """Add a member (409 if already one)."""
    return _answer(_run("add_member", path.conv, body.user))


@bp.delete("/conversations/<conv>/members/<user>", responses={200: ConvOut})
def remove_member(path: MemberPath) -> Response:
    """Remove a member (404 if not one)."""
    return _answer(_run("remove_member", path.conv, path.user))


@bp.get("/conversations/<conv>/messages", responses={200: MessagesResponse})
def conversation_history(path: ConvPath, query: HistoryQuery) -> Response:
    """A page of a conversation's messages, as the history endpoint pages them."""
    return _answer(_run("history", path.conv, before=query.before, after=query.after, limit=query.limit))


# --- tokens ---------------------------------------------------------------------------------------
@bp.post("/tokens", responses={201: TokenOut, **error_responses(409)})
def issue(body: TokenRequest) -> Response:
    """Issue a user's token, or an admin-scoped one."""
    return _answer(_run("issue_token", body.user, body.ttl_s, admin=body.admin), 201)


@bp.post("/tokens/revoke", responses={200: RevokeOut})
def revoke(body: RevokeRequest) -> Response:
    """Revoke every token of a user issued until now, or one token."""
    return _answer(_run("revoke_tokens", body.user, body.token))


# --- the running broker -----------------------------------------------------------------------------
@bp.get("/clients", responses={200: ClientsOut})
def clients(query: ClientsQuery) -> Response:
    """The devices connected to the broker (its admin channel: the embedded broker only)."""
    return _answer({"clients": _run("clients", query.user)})


@bp.post("/kick", responses={200: KickOut})
def kick(body: KickRequest) -> Response:
    """Disconnect a user's devices (optionally disabling it) or one client id."""
    return _answer(_run("kick", body.user, body.client_id, disable=body.disable))


@bp.get("/stats", responses={200: StatsOut})
def stats() -> Response:
    """Counts from the store and the broker's figures."""
    return _answer(_run("stats"))


# --- the notifier: webhook subscriptions and the delivery log ---------------------------------------
class WebhookCreate(_Strict):
    id: str
    url: str = Field(max_length=2048, description="http:// or https://")
    events: list[str] | None = Field(default=None, description="event types (docs/protocol.md, Webhooks); "
                                     "left out: all of them")
    secret: str | None = Field(default=None, min_length=16, max_length=256,
                               description="the signing secret; left out: a new random one")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: int
    secret: str | None = Field(default=None, description="only in the answer to its creation")


class WebhooksOut(BaseModel):
    webhooks: list[WebhookOut]


class WebhookPath(BaseModel):
    webhook: str


class WebhookRemoved(BaseModel):
    id: str
    removed: bool


class DeliveriesQuery(QueryModel):
    channel: Literal["push", "webhook"] | None = None
    state: Literal["pending", "delivered", "dead", "cancelled"] | None = None
    target: str | None = Field(default=None, max_length=200, description="a webhook id, or USER/DEVICE for push")
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class DeliveryOut(BaseModel):
    id: str = Field(description="the idempotency key its receiver sees")
    channel: str
    target: str
    state: str
    attempts: int
    next_at: int
    created_at: int
    updated_at: int
    last_error: str | None
    payload: dict[str, Any]


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]


class ReplayRequest(_Strict):
    ids: list[str] = Field(default_factory=list, max_length=MAX_REPLAY, description="deliveries to send again")
    dead: bool = Field(default=False, description="and every dead letter (of channel and target, if given)")
    channel: Literal["push", "webhook"] | None = None
    target: str | None = Field(default=None, max_length=200)


class ReplayOut(BaseModel):
    replayed: int = Field(description="pending again; the notifier sends them on its next pass")


@bp.post("/webhooks", responses={201: WebhookOut, **error_responses(409)})
def add_webhook(body: WebhookCreate) -> Response:
    """Subscribe a URL to events; the answer carries the signing secret (the only one that does)."""
    return _answer(_run("add_webhook", body.id, body.url, body.events, body.secret), 201)


@bp.get("/webhooks", responses={200: WebhooksOut})
def list_webhooks() -> Response:
    """Every webhook subscription (without secrets)."""
    return _answer(_run("list_webhooks"))


@bp.delete("/webhooks/<webhook>", responses={200: WebhookRemoved})
def remove_webhook(path: WebhookPath) -> Response:
    """Unsubscribe; its pending deliveries are cancelled when their turn comes."""
    return _answer(_run("remove_webhook", path.webhook))


@bp.get("/deliveries", responses={200: DeliveriesOut})
def deliveries(query: DeliveriesQuery) -> Response:
    """The delivery log of push notifications and webhooks, newest first (state=dead: the dead letters)."""
    return _answer(_run("deliveries", query.channel, query.state, query.target, query.limit))


@bp.post("/deliveries/replay", responses={200: ReplayOut})
def replay(body: ReplayRequest) -> Response:
    """Send deliveries again with their original idempotency key (404 names ids that are not deliveries)."""
    return _answer(_run("replay_deliveries", body.ids, dead=body.dead, channel=body.channel, target=body.target))
