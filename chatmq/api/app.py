"""The Flask application factory.

flask-openapi3 generates ``/openapi.json`` from the pydantic models the views declare, so the
document and the validation can never drift apart. Its own doc UI is off: it would claim ``/``
and ``/openapi/*``; the JSON document is served at exactly ``/openapi.json`` instead.
"""

from __future__ import annotations

from typing import cast

import redis
from flask import Flask, Response, current_app, jsonify
from flask_openapi3 import Info, OpenAPI

from chatmq.api import (
    admin,
    auth,
    brokerhooks,
    health,
    manage,
    media,
    metrics,
    presence,
    push,
    requestlog,
    search,
    send,  # noqa: F401 - its route (POST .../messages) extends the conversations blueprint
    users,
    webapp,
)
from chatmq.api.bearer import SECURITY_SCHEMES
from chatmq.api.context import EXTENSION, ApiContext
from chatmq.api.errors import ErrorResponse, register_error_handlers, validation_error_response
from chatmq.api.jsonprovider import OrjsonProvider
from chatmq.core.config import Settings
from chatmq.core.media import MediaStore
from chatmq.core.store import Store

MAX_REQUEST_BYTES = 256 * 1024  # logins and conversation changes (a big member list)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    redis_client: redis.Redis | None = None,
    media_store: MediaStore | None = None,
) -> Flask:
    """Build the API. ``store``/``redis_client`` are for tests and embedding; by default each
    worker process opens its own store on first use and Redis connects lazily."""
    app = OpenAPI(
        __name__,
        info=Info(title="chatmq API", version="1"),
        security_schemes=SECURITY_SCHEMES,
        validation_error_status=400,
        validation_error_model=ErrorResponse,
        validation_error_callback=validation_error_response,
        doc_ui=False,
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json = OrjsonProvider(app)  # orjson-encoded responses, in insertion order
    app.extensions[EXTENSION] = ApiContext(settings, store, redis_client)

    # manage.bp: conversations + management (push.py adds the mute routes, send.py POST .../messages)
    for bp in (auth.bp, push.logout_bp, manage.bp, push.bp, presence.bp, search.bp, users.bp, admin.bp, health.bp):
        app.register_api(bp)
    brokerhooks.install(app)  # EMQX's and RabbitMQ's HTTP auth hooks, each when its secret is set
    media.install(app, settings, media_store)  # uploads: their own body limit and store
    app.add_url_rule("/openapi.json", "openapi_json", _openapi_json, methods=["GET"])
    webapp.install(app, settings)  # the web app's files under /app/ (web/), and / sends browsers there
    register_error_handlers(app)
    metrics.install(app)  # GET /metrics and per-route request latency
    requestlog.install(app)  # X-Request-Id and one log line per request
    return app


def _openapi_json() -> Response:
    """The generated OpenAPI 3 document (built once, on first request)."""
    return jsonify(cast(OpenAPI, current_app).api_doc)
