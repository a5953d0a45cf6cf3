"""``GET /v1/search``: full-text search over the caller's conversations (chatmq.core.search defines
the words; the store keeps the index in step with edits and deletions and reads the caller's
memberships at query time, so a removed member stops finding that conversation at once)."""

from __future__ import annotations

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from chatmq.api.bearer import SECURITY, current_user, require_user
from chatmq.api.context import get_context
from chatmq.api.conversations import MessageOut
from chatmq.api.errors import ApiError, error_responses
from chatmq.api.querymodel import QueryModel
from chatmq.core.history import SearchRefused, search_messages
from chatmq.core.search import DEFAULT_SEARCH_LIMIT, MAX_CURSOR_CHARS, MAX_QUERY_CHARS, MAX_SEARCH_LIMIT

bp = APIBlueprint(
    "search",
    __name__,
    url_prefix="/v1/search",
    abp_tags=[Tag(name="search")],
    abp_security=SECURITY,
    abp_responses=error_responses(400, 401, 500),
)
bp.before_request(require_user)


class SearchParams(QueryModel):
    model_config = ConfigDict(extra="forbid")

    q: str = Field(description=f"words to find, all of them (at most {MAX_QUERY_CHARS} characters)")
    conv: str | None = Field(default=None, description="only this conversation (a member's)")
    sender: str | None = Field(default=None, description="only messages from this user")
    before: str | None = Field(default=None, max_length=MAX_CURSOR_CHARS,
                               description="the next page: the cursor a previous page returned as next")
    limit: int = Field(default=DEFAULT_SEARCH_LIMIT, ge=1, le=MAX_SEARCH_LIMIT)


class SearchResponse(BaseModel):
    results: list[MessageOut] = Field(description="messages as they stand now (view=messages, without reactions), "
                                                  "newest first")
    next: str | None = Field(description="pass as before= for older results; null: no more")


STATUS = {"bad_request": 400, "forbidden": 403, "not_found": 404}


@bp.get("", responses={200: SearchResponse, **error_responses(403, 404)})
def search(query: SearchParams) -> Response:
    """Messages with every word of q in the caller's conversations, newest first, a page at a time."""
    try:
        page = search_messages(get_context().store, current_user(), query.q, conv=query.conv, sender=query.sender,
                               before=query.before, limit=query.limit)
    except SearchRefused as refusal:
        raise ApiError(STATUS[refusal.code], refusal.message) from None
    return jsonify(page.to_payload())
