"""``GET /healthz`` (liveness) and ``GET /readyz``: is everything the chat path depends on reachable?

Unauthenticated and cheap (one store ping, two Redis round trips, one MQTT handshake), so a load
balancer or compose healthcheck can call it every few seconds. 503 names each failing check.
"""

from __future__ import annotations

import os

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from chatmq.api.context import ApiContext, get_context
from chatmq.core.checks import OK, mqtt_check, ping_check
from chatmq.core.checks import run_checks as run_dependency_checks
from chatmq.core.liveness import BRIDGE_ALIVE_KEY

BROKER_CONNECT_TIMEOUT_S = 0.5

bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="health")])


class HealthChecks(BaseModel):
    store: str
    redis: str
    broker: str
    bridge: str


class HealthResponse(BaseModel):
    status: str = Field(description="ok | unavailable")
    checks: HealthChecks = Field(description='"ok", or why the check failed')


class LiveResponse(BaseModel):
    status: str = Field(description="always ok: the process answers")


@bp.get("/healthz", responses={200: LiveResponse})
def healthz() -> Response:
    """Liveness: this API process answers. No dependency is checked (see /readyz)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz", responses={200: HealthResponse, 503: HealthResponse})
def readyz() -> Response:
    """Readiness: the store, Redis, the MQTT broker and at least one bridge are reachable."""
    checks = run_checks(get_context())
    healthy = all(v == OK for v in checks.values())
    response = jsonify({"status": "ok" if healthy else "unavailable", "checks": checks})
    response.status_code = 200 if healthy else 503
    return response


def run_checks(ctx: ApiContext) -> dict[str, str]:
    host, port = ctx.settings.broker_host, ctx.settings.resolved_broker_port
    checks = run_dependency_checks({
        "store": lambda: ping_check(ctx.store)(),  # the store opens lazily: opening is part of the check
        "redis": ping_check(ctx.redis),
        "broker": mqtt_check(host, port, ctx.secret, f"chatmq-healthz-{os.getpid()}", BROKER_CONNECT_TIMEOUT_S),
    })
    checks["bridge"] = _check_bridge(ctx) if checks["redis"] == OK else "unknown: redis is unreachable"
    return checks


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_bridge(ctx: ApiContext) -> str:
    try:
        alive = bool(ctx.redis.exists(BRIDGE_ALIVE_KEY))
    except Exception as exc:
        return f"unknown: {_describe(exc)}"
    return OK if alive else f"down: no bridge heartbeat ({BRIDGE_ALIVE_KEY} is missing)"
