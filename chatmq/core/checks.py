"""Dependency checks for readiness endpoints: each a callable returning "ok" or raising.

Kept apart from the metrics server so the API can use them without importing prometheus_client
early (its multi-process mode must see PROMETHEUS_MULTIPROC_DIR before the first import).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chatmq.core.auth import issue_token
from chatmq.core.config import SERVICE_USER
from chatmq.core.mqttprobe import probe

OK = "ok"
Check = Callable[[], str]


def ping_check(target: Any) -> Check:
    """A check that passes when ``target.ping()`` returns (a Store, a Redis client)."""

    def check() -> str:
        target.ping()
        return OK

    return check


def mqtt_check(host: str, port: int, secret: str, client_id: str, timeout: float = 1.0) -> Check:
    """A check that passes when the broker answers an MQTT handshake (any CONNACK), made as the
    service identity: a bare connect-and-close says less and is logged by brokers as an error."""

    def check() -> str:
        token = issue_token(secret, SERVICE_USER, 60, service=True).token
        try:
            probe(host, port, timeout, client_id=client_id, username=SERVICE_USER, password=token)
        except (OSError, ValueError) as exc:
            raise ConnectionError(f"{host}:{port}: {type(exc).__name__}: {exc}") from None
        return OK

    return check


def run_checks(checks: Mapping[str, Check]) -> dict[str, str]:
    results = {}
    for name, check in checks.items():
        try:
            results[name] = check()
        except Exception as exc:  # a check that raises is a failing check, never a 500
            results[name] = f"unreachable: {type(exc).__name__}: {exc}"
    return results
