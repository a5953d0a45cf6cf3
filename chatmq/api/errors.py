"""One error shape for every failure: ``{"error": {"code": str, "message": str}}``.

Views raise ApiError; Werkzeug's HTTP errors (404 unknown route, 405, 413...), flask-openapi3's
validation failures and unexpected exceptions are turned into the same shape by handlers
registered here, so clients parse exactly one format and never see a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

log = logging.getLogger("chatmq.api")

# HTTP status -> stable error code (the part clients switch on).
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by views for an expected failure; ``code`` defaults from the status."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")


def error_response(status: int, message: str, code: str | None = None) -> Response:
    response = jsonify({"error": {"code": code or CODES.get(status, "error"), "message": message}})
    response.status_code = status
    return response


def validation_error_response(exc: ValidationError) -> Response:
    """flask-openapi3's ``validation_error_callback``: a 400 in our shape, naming the field."""
    errors = exc.errors(include_url=False)
    if any(not err["loc"] for err in errors):
        # The body as a whole failed: it reaches pydantic as None when it is not parseable JSON.
        if request.get_json(silent=True) is not None:
            return error_response(400, "request body must be a JSON object")
        if request.is_json and request.get_data(cache=True):
            return error_response(400, "request body is not valid JSON")
        return error_response(400, "request body must be a JSON object (Content-Type: application/json)")
    parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors[:3]]
    return error_response(400, "; ".join(parts))


def _handle_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.code)


def _handle_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(status, _http_message(exc))
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _http_message(exc: HTTPException) -> str:
    """Werkzeug's descriptions are prose written for HTML pages: say what happened instead."""
    if isinstance(exc, NotFound) and request.url_rule is None:
        return f"no such route: {request.method} {request.path}"
    if isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(sorted(exc.valid_methods or ()))
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        return f"request body over {limit} bytes" if limit is not None else "request body too large"
    return exc.description or exc.name


def _handle_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal server error")


def _handle_too_deep(exc: RecursionError) -> Response:
    """A JSON nesting bomb exhausts the parser's recursion: the client's fault, not ours."""
    return error_response(400, "request body is nested too deeply")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(RecursionError, _handle_too_deep)
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(Exception, _handle_unexpected)


def error_responses(*statuses: int) -> dict[Any, Any]:
    """``responses=`` entries documenting our error shape for the given statuses."""
    return dict.fromkeys(statuses, ErrorResponse)
