"""Profiles: ``/v1/me`` (yours, to read and change) and ``/v1/users`` (the people you chat with).

A profile is what chat clients show for a user id: a display name and an avatar (the media id of
an image the user uploaded). The rule for seeing someone's profile is the presence rule
(chatmq.core.access): yourself, or someone you share a conversation with; others are not found, so
the endpoint cannot be used to list who has an account.
"""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api.bearer import SECURITY, current_user, require_user
from chatmq.api.context import get_context
from chatmq.api.errors import ApiError, error_responses
from chatmq.api.media import media_store
from chatmq.api.presence import share_conversation
from chatmq.api.querymodel import QueryModel
from chatmq.core.ids import is_valid_id
from chatmq.core.media import media_url
from chatmq.core.profiles import MAX_DISPLAY_NAME_CHARS, check_avatar, clean_display_name
from chatmq.core.store import NotFound, User

MAX_PROFILES_PER_REQUEST = 100

bp = APIBlueprint(
    "users",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="users")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)
bp.before_request(require_user)


class ProfileOut(BaseModel):
    id: str
    display_name: str | None = Field(description="what to show instead of the id; null: show the id")
    avatar: str | None = Field(description="media id of the user's picture, or null")
    avatar_url: str | None = Field(description="GET it with your bearer token; relative to the API base")


class ProfilesResponse(BaseModel):
    users: list[ProfileOut] = Field(description="the visible ones of the ids asked for, ordered by id")


class ProfilePatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    display_name: str | None = Field(default=None, max_length=MAX_DISPLAY_NAME_CHARS, description="null clears it")
    avatar: str | None = Field(default=None, description="media id of an image you uploaded; null clears it")


class ProfilesQuery(QueryModel):
    id: list[str] = Field(max_length=MAX_PROFILES_PER_REQUEST, description="user ids (repeat the parameter)")


class UserPath(BaseModel):
    user: str


def profile(user: User) -> dict[str, object]:
    return {"id": user.id, "display_name": user.display_name, "avatar": user.avatar,
            "avatar_url": media_url(user.avatar) if user.avatar else None}


@bp.get("/me", responses={200: ProfileOut})
def get_me() -> Response:
    """Your own profile."""
    user = get_context().store.get_user(current_user())
    if user is None:  # pragma: no cover - require_user has just read it
        raise ApiError(401, "invalid or expired token")
    return jsonify(profile(user))


@bp.patch("/me", responses={200: ProfileOut})
def patch_me(body: ProfilePatch) -> Response:
    """Change your display name or avatar; a field left out stays as it is."""
    me = current_user()
    store = get_context().store
    user = store.get_user(me)
    if user is None:  # pragma: no cover - require_user has just read it
        raise ApiError(401, "invalid or expired token")
    try:
        name = clean_display_name(body.display_name) if "display_name" in body.model_fields_set else user.display_name
        avatar = check_avatar(body.avatar) if "avatar" in body.model_fields_set else user.avatar
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if avatar is not None and avatar != user.avatar:
        info = media_store().get(avatar)
        if info is None or info.owner != me:
            raise ApiError(400, f"avatar: no media {avatar!r} uploaded by you")
        if not info.mime.startswith("image/"):
            raise ApiError(400, f"avatar: media {avatar!r} is {info.mime}, not an image")
    try:
        store.set_profile(me, name, avatar)
    except NotFound:  # pragma: no cover - users are never deleted from the store
        raise ApiError(401, "invalid or expired token") from None
    updated = store.get_user(me)
    assert updated is not None
    return jsonify(profile(updated))


@bp.get("/users", responses={200: ProfilesResponse})
def get_profiles(query: ProfilesQuery) -> Response:
    """Profiles of several users at once (``?id=a&id=b``): yours and those you share a conversation with."""
    me = current_user()
    wanted = {user for user in query.id if is_valid_id(user)}
    visible = wanted & _people_of(me)
    users = get_context().store.get_users(sorted(visible))
    return jsonify({"users": [profile(user) for user in users]})


@bp.get("/users/<user>", responses={200: ProfileOut, **error_responses(404)})
def get_profile(path: UserPath) -> Response:
    """One user's profile: yours, or someone you share a conversation with (else 404)."""
    me = current_user()
    user = get_context().store.get_user(path.user) if is_valid_id(path.user) else None
    if user is None or (user.id != me and not share_conversation(me, user.id)):
        raise ApiError(404, f"no user {path.user!r} you share a conversation with")
    return jsonify(profile(user))


def _people_of(me: str) -> set[str]:
    people = {me}
    for conv in get_context().store.list_conversations(member=me):
        people.update(conv.members)
    return people

