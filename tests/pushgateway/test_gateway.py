"""chatmq's push gateway against local stand-ins of FCM, Google's token endpoint and APNs: the
requests it makes are checked byte for byte against the providers' documented formats (FCM HTTP
v1 ``messages:send``, the OAuth 2.0 JWT-bearer grant, APNs ``/3/device/{token}`` with a token-based
provider JWT), and the providers' answers become chatmq's ``{"rejected": [...]}``."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from werkzeug.serving import make_server

from chatmq.core import push
from chatmq.core.store.base import PushTarget
from chatmq.pushgateway import formats
from chatmq.pushgateway.config import ConfigError, load_config
from chatmq.pushgateway.server import NOTIFY_PATH, Gateway, create_app
from tests.notify.receiver import Receiver, Reply

pytestmark = pytest.mark.timeout(60)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()  # fmt: skip


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def providers() -> Iterator[Receiver]:
    """One local server plays Google's token endpoint, FCM and APNs (told apart by path)."""
    receiver = Receiver().start()
    receiver.decide = lambda r: (Reply(200, b'{"access_token": "ya29.test-access", "expires_in": 3599, '
                                 b'"token_type": "Bearer"}') if r.path == "/token" else None)  # fmt: skip
    yield receiver
    receiver.stop()


@pytest.fixture
def config_file(tmp_path: Path, keys: tuple, providers: Receiver) -> Path:
    google, apple = keys
    (tmp_path / "sa.json").write_text(json.dumps({
        "type": "service_account", "project_id": "chatmq-test",
        "client_email": "push@chatmq-test.iam.gserviceaccount.com", "private_key": pem(google),
        "token_uri": providers.url + "/token"}))  # fmt: skip
    (tmp_path / "AuthKey_KEY1234567.p8").write_text(pem(apple))
    (tmp_path / "gateway.toml").write_text(f"""
[fcm]
service_account_file = "sa.json"
endpoint = "{providers.url}"

[apns]
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "AuthKey_KEY1234567.p8"
topic = "com.example.chat"
endpoint = "{providers.url}"
http2 = false
""")
    return tmp_path / "gateway.toml"


@pytest.fixture
def gateway_url(config_file: Path) -> Iterator[str]:
    gateway = Gateway(load_config(config_file))
    server = make_server("127.0.0.1", 0, create_app(gateway), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}{NOTIFY_PATH}"
    server.shutdown()
    gateway.close()


def note(platform: str, kind: str = "message", preview: str | None = "see you", app_id: str | None = None) -> dict:
    target = PushTarget("bob", "phone", platform, f"{platform}-token-1", app_id)
    if kind == "message":
        draft = push.message_draft(target, "team", "Team", 42, "alice", "m42", 1_735_689_600_123, preview, 2)
    else:
        draft = push.clear_draft(target, "team", 42, 1_735_689_600_123)
    return push.notification(draft, 7, 3)


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url, content=push.encode(body), headers={"Content-Type": "application/json"}, timeout=10)


def provider_calls(providers: Receiver, path_prefix: str) -> list:
    return [r for r in providers.received() if r.path.startswith(path_prefix)]


def test_fcm_message_request_byte_for_byte(gateway_url: str, providers: Receiver, keys: tuple) -> None:
    answer = post(gateway_url, note("fcm"))
    assert answer.status_code == 200 and answer.json() == {"rejected": []}
    (token_call,) = provider_calls(providers, "/token")
    form = urllib.parse.parse_qs(token_call.body.decode())
    assert token_call.header("Content-Type") == "application/x-www-form-urlencoded"
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt.decode(form["assertion"][0], keys[0].public_key(), algorithms=["RS256"],
                        audience=providers.url + "/token")  # fmt: skip
    assert claims["iss"] == "push@chatmq-test.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 60

    (send,) = provider_calls(providers, "/v1/")
    assert send.method == "POST" and send.path == "/v1/projects/chatmq-test/messages:send"
    assert send.header("Authorization") == "Bearer ya29.test-access"
    assert send.header("Content-Type") == "application/json; UTF-8"
    assert send.body == (
        b'{"message":{"token":"fcm-token-1","data":{"type":"message","id":"bob/phone:team:42:message",'
        b'"conv":"team","seq":"42","unread":"7","conv_unread":"3","sender":"alice","message_id":"m42",'
        b'"collapsed":"2"},"notification":{"title":"Team","body":"alice: see you"},'
        b'"android":{"collapse_key":"team","priority":"high","notification":{"tag":"team","notification_count":7}}}}'
    )
    post(gateway_url, note("fcm", preview=None))  # the access token is reused; no preview, no text
    assert len(provider_calls(providers, "/token")) == 1
    assert provider_calls(providers, "/v1/")[1].json()["message"]["notification"] == {
        "title": "Team", "body": "2 new messages"}


def test_fcm_clear_is_a_data_message(gateway_url: str, providers: Receiver) -> None:
    assert post(gateway_url, note("fcm", "clear")).status_code == 200
    (send,) = provider_calls(providers, "/v1/")
    assert send.body == (
        b'{"message":{"token":"fcm-token-1","data":{"type":"clear","id":"bob/phone:team:42:clear","conv":"team",'
        b'"seq":"42","unread":"7","conv_unread":"3"},"android":{"collapse_key":"team","priority":"high"}}}'
    )


def test_apns_alert_request_byte_for_byte(gateway_url: str, providers: Receiver, keys: tuple) -> None:
    body = note("apns")
    assert post(gateway_url, body).status_code == 200
    (send,) = provider_calls(providers, "/3/")
    assert send.method == "POST" and send.path == "/3/device/apns-token-1"
    token = send.header("authorization") or ""
    assert token.startswith("bearer ")
    assert jwt.get_unverified_header(token[7:]) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    claims = jwt.decode(token[7:], keys[1].public_key(), algorithms=["ES256"])
    assert claims["iss"] == "TEAM123456" and abs(claims["iat"] - time.time()) < 60 and set(claims) == {"iss", "iat"}
    assert send.header("apns-topic") == "com.example.chat"
    assert send.header("apns-push-type") == "alert" and send.header("apns-priority") == "10"
    assert send.header("apns-collapse-id") == "team"
    assert send.header("apns-id") == formats.apns_id(body["notification"])
    assert len(send.header("apns-id") or "") == 36  # a canonical UUID, the same on every retry
    assert send.header("apns-expiration") == str(1_735_689_600 + 86_400)
    assert send.body == (
        b'{"aps":{"alert":{"title":"Team","body":"alice: see you"},"badge":7,"sound":"default","thread-id":"team"},'
        b'"chatmq":{"type":"message","id":"bob/phone:team:42:message","conv":"team","seq":"42","unread":"7",'
        b'"conv_unread":"3","sender":"alice","message_id":"m42","collapsed":"2"}}'
    )


def test_apns_clear_is_a_background_push_and_app_id_picks_the_topic(gateway_url: str, providers: Receiver) -> None:
    assert post(gateway_url, note("apns", "clear", app_id="com.example.other")).status_code == 200
    (send,) = provider_calls(providers, "/3/")
    assert send.header("apns-push-type") == "background" and send.header("apns-priority") == "5"
    assert send.header("apns-topic") == "com.example.other"
    assert send.body == (
        b'{"aps":{"content-available":1,"badge":7},"chatmq":{"type":"clear","id":"bob/phone:team:42:clear",'
        b'"conv":"team","seq":"42","unread":"7","conv_unread":"3"}}'
    )


@pytest.mark.parametrize(("platform", "status", "body", "expected_status", "rejected"), [
    ("fcm", 404, b'{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}', 200, True),
    ("fcm", 403, b'{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"errorCode":"SENDER_ID_MISMATCH"}]}}',
     200, True),
    ("fcm", 503, b'{"error":{"code":503,"status":"UNAVAILABLE"}}', 502, False),
    ("fcm", 429, b'{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}', 502, False),
    ("fcm", 400, b'{"error":{"code":400,"status":"INVALID_ARGUMENT"}}', 400, False),
    ("apns", 410, b'{"reason":"Unregistered","timestamp":1735689600000}', 200, True),
    ("apns", 400, b'{"reason":"BadDeviceToken"}', 200, True),
    ("apns", 400, b'{"reason":"DeviceTokenNotForTopic"}', 200, True),
    ("apns", 429, b'{"reason":"TooManyRequests"}', 502, False),
    ("apns", 503, b'{"reason":"ServiceUnavailable"}', 502, False),
    ("apns", 400, b'{"reason":"PayloadTooLarge"}', 400, False),
])  # fmt: skip
def test_provider_answers_become_chatmq_answers(
    gateway_url: str, providers: Receiver, platform: str, status: int, body: bytes, expected_status: int,
    rejected: bool,
) -> None:  # fmt: skip
    before = providers.decide
    providers.decide = lambda r: before(r) or Reply(status, body)  # type: ignore[misc]
    answer = post(gateway_url, note(platform))
    assert answer.status_code == expected_status, answer.text
    if expected_status == 200:
        assert answer.json() == {"rejected": [f"{platform}-token-1"] if rejected else []}


def test_expired_credentials_are_refreshed_once(gateway_url: str, providers: Receiver) -> None:
    first = {"fcm": True, "apns": True}

    def decide(request):  # type: ignore[no-untyped-def]
        if request.path == "/token":
            return Reply(200, b'{"access_token": "ya29.fresh", "expires_in": 3599}')
        kind = "fcm" if request.path.startswith("/v1/") else "apns"
        if first[kind]:
            first[kind] = False
            return Reply(401, b'{"error":{"code":401,"status":"UNAUTHENTICATED"}}') if kind == "fcm" else Reply(
                403, b'{"reason":"ExpiredProviderToken"}')
        return Reply(200, b"")

    providers.decide = decide
    assert post(gateway_url, note("fcm")).json() == {"rejected": []}
    assert post(gateway_url, note("apns")).json() == {"rejected": []}
    assert len(provider_calls(providers, "/token")) == 2  # fetched, then fetched again after the 401
    assert len(provider_calls(providers, "/v1/")) == 2 and len(provider_calls(providers, "/3/")) == 2


def test_bad_requests_and_unconfigured_platforms(gateway_url: str, tmp_path: Path) -> None:
    assert httpx.post(gateway_url, content=b"nope", timeout=5).status_code == 400
    assert post(gateway_url, {"notification": {"id": "x"}}).status_code == 400
    (tmp_path / "only-fcm.toml").write_text('[fcm]\nservice_account_file = "missing.json"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "only-fcm.toml")
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(ConfigError, match="configure"):
        load_config(tmp_path / "empty.toml")
