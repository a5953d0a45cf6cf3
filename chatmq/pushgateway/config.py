"""The gateway's configuration: a TOML file with an ``[fcm]`` and/or an ``[apns]`` table.

    [fcm]
    service_account_file = "/etc/chatmq/fcm-service-account.json"   # from the Firebase console
    # project_id = "my-project"          (default: the service account's project_id)
    # endpoint = "https://fcm.googleapis.com"

    [apns]
    team_id = "ABCDE12345"
    key_id = "KEY1234567"
    key_file = "/etc/chatmq/AuthKey_KEY1234567.p8"                  # the token-based auth key
    topic = "com.example.chat"                                       # the app's bundle id
    # endpoint = "https://api.push.apple.com"    (development: https://api.sandbox.push.apple.com)
    # http2 = true                               (APNs speaks only HTTP/2)

Relative paths are relative to the file. ``endpoint`` and ``http2`` exist so the requests can be
checked against a local server; production leaves them alone.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FCM_ENDPOINT = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
APNS_ENDPOINT = "https://api.push.apple.com"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class FcmConfig:
    project_id: str
    client_email: str
    private_key: str  # PEM, RSA
    token_uri: str
    endpoint: str = FCM_ENDPOINT


@dataclass(frozen=True, slots=True)
class ApnsConfig:
    team_id: str
    key_id: str
    private_key: str  # PEM, EC P-256 (the .p8 file)
    topic: str
    endpoint: str = APNS_ENDPOINT
    http2: bool = True


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    fcm: FcmConfig | None = None
    apns: ApnsConfig | None = None
    timeout_s: float = 10.0


def _text(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[{where}] {key} is required (a non-empty string)")
    return value


def _read(base: Path, path: str, where: str) -> str:
    file = (base / path).expanduser()
    try:
        return file.read_text()
    except OSError as exc:
        raise ConfigError(f"[{where}] cannot read {file}: {exc.strerror}") from None


def load_config(path: Path) -> GatewayConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    base = path.parent
    fcm = apns = None
    if "fcm" in data:
        table = data["fcm"]
        try:
            account = json.loads(_read(base, _text(table, "service_account_file", "fcm"), "fcm"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"[fcm] the service account file is not JSON: {exc}") from None
        fcm = FcmConfig(
            project_id=table.get("project_id") or _text(account, "project_id", "fcm service account"),
            client_email=_text(account, "client_email", "fcm service account"),
            private_key=_text(account, "private_key", "fcm service account"),
            token_uri=account.get("token_uri") or "https://oauth2.googleapis.com/token",
            endpoint=table.get("endpoint", FCM_ENDPOINT).rstrip("/"),
        )
    if "apns" in data:
        table = data["apns"]
        apns = ApnsConfig(
            team_id=_text(table, "team_id", "apns"), key_id=_text(table, "key_id", "apns"),
            private_key=_read(base, _text(table, "key_file", "apns"), "apns"), topic=_text(table, "topic", "apns"),
            endpoint=table.get("endpoint", APNS_ENDPOINT).rstrip("/"), http2=bool(table.get("http2", True)),
        )  # fmt: skip
    if fcm is None and apns is None:
        raise ConfigError(f"{path}: configure [fcm], [apns] or both")
    return GatewayConfig(fcm=fcm, apns=apns, timeout_s=float(data.get("timeout_s", 10.0)))
