"""External identity end to end: a real `chatmq up` that trusts a JWKS server the test runs, and
the identity provider's tokens used as the MQTT password and as the HTTP bearer token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from chatmq.cli.localredis import LocalRedis
from tests.identity.idp import JwksServer, SigningKey, idp_env
from tests.ops.helpers import Device
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def idp_key() -> SigningKey:
    return SigningKey("RS256")


@pytest.fixture(scope="module")
def jwks(idp_key: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer([idp_key]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def idp_stack(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis,
              jwks: JwksServer) -> Iterator[Stack]:
    env = idp_env(jwks.url, CHATMQ_IDP_CREATE_USERS="true", CHATMQ_IDP_SYNC_NAMES="true", CHATMQ_IDP_JWKS_REFRESH_S="1",
                  CHATMQ_IDP_JWKS_MIN_REFETCH_S="0.5")
    running = Stack(tmp_path_factory.mktemp("idp") / "data", redis_server.url, env=env).start()
    yield running
    assert running.stop() == 0, running.log()


def mqtt_accepts(stack: Stack, user: str, token: str) -> bool:
    device = Device(stack, user, token)
    try:
        return device.accepted
    finally:
        device.close()


def http_status(stack: Stack, token: str) -> int:
    return stack.http("GET", "/v1/conversations", token=token)[0]


def test_good_token_logs_in_over_mqtt_and_http(idp_stack: Stack, idp_key: SigningKey,
                                               unique: Callable[[str], str]) -> None:
    alice = unique("alice")
    idp_stack.add_user(alice)
    token = idp_key.token(alice)
    assert mqtt_accepts(idp_stack, alice, token)
    assert http_status(idp_stack, token) == 200
    assert not mqtt_accepts(idp_stack, unique("someone-else"), token)  # the username must be the token's user
    assert mqtt_accepts(idp_stack, alice, "correct horse battery")  # passwords keep working
    assert http_status(idp_stack, idp_stack.token(alice)) == 200  # and chatmq's own tokens


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("expired", lambda key, user: key.token(user, ttl_s=-120)),
        ("wrong audience", lambda key, user: key.token(user, audience="another-app")),
        ("wrong issuer", lambda key, user: key.token(user, issuer="https://elsewhere.test")),
        ("unknown kid", lambda key, user: SigningKey("RS256").token(user)),
    ],
)
def test_bad_tokens_are_refused_over_mqtt_and_http(idp_stack: Stack, idp_key: SigningKey, case: str,
                                                   make: Callable[[SigningKey, str], str],
                                                   unique: Callable[[str], str]) -> None:
    bob = unique("bob")
    idp_stack.add_user(bob)
    token = make(idp_key, bob)
    assert not mqtt_accepts(idp_stack, bob, token), case
    status, body = idp_stack.http("GET", "/v1/conversations", token=token)
    assert status == 401 and body["error"]["code"] == "unauthorized", case


def test_rotated_key_is_accepted_at_once(idp_stack: Stack, idp_key: SigningKey, jwks: JwksServer,
                                         unique: Callable[[str], str]) -> None:
    carol = unique("carol")
    idp_stack.add_user(carol)
    rotated = SigningKey("EdDSA")
    jwks.keys = [idp_key, rotated]
    try:
        time.sleep(0.6)  # past the verifiers' minimum refetch interval since any earlier unknown kid
        assert mqtt_accepts(idp_stack, carol, rotated.token(carol))
        assert http_status(idp_stack, rotated.token(carol)) == 200
    finally:
        jwks.keys = [idp_key]


def test_disabled_user_is_refused_whatever_the_token(idp_stack: Stack, idp_key: SigningKey,
                                                     unique: Callable[[str], str]) -> None:
    dave = unique("dave")
    idp_stack.add_user(dave)
    token = idp_key.token(dave)
    assert mqtt_accepts(idp_stack, dave, token)
    idp_stack.admin("user", "disable", dave)
    assert not mqtt_accepts(idp_stack, dave, token)
    assert http_status(idp_stack, token) == 401
    assert not mqtt_accepts(idp_stack, dave, idp_key.token(dave))  # a fresh token changes nothing


def test_revoking_a_users_tokens_covers_identity_provider_tokens(idp_stack: Stack, idp_key: SigningKey,
                                                                 unique: Callable[[str], str]) -> None:
    frank = unique("frank")
    idp_stack.add_user(frank)
    token = idp_key.token(frank, now=time.time() - 5)
    assert http_status(idp_stack, token) == 200
    idp_stack.admin("token", "revoke", frank)
    assert http_status(idp_stack, token) == 401
    assert not mqtt_accepts(idp_stack, frank, token)
    assert mqtt_accepts(idp_stack, frank, idp_key.token(frank, now=time.time() + 1))  # issued after the revoke


def test_unknown_user_is_created_on_first_login_with_a_display_name(idp_stack: Stack, idp_key: SigningKey,
                                                                    unique: Callable[[str], str]) -> None:
    erin, gina = unique("erin"), unique("gina")
    assert mqtt_accepts(idp_stack, erin, idp_key.token(erin, extra={"name": "Erin Example"}))
    listed = idp_stack.admin("user", "list").stdout
    assert any(line.startswith(f"{erin}\t") for line in listed.splitlines())
    token = idp_key.token(gina, extra={"name": "Gina"})
    assert http_status(idp_stack, token) == 200  # first login over HTTP creates the user too
    status, me = idp_stack.http("GET", "/v1/me", token=token)
    assert status == 200 and me["display_name"] == "Gina"
    # such a user has no password: no password logs it in
    assert not mqtt_accepts(idp_stack, gina, "")
    assert idp_stack.http("POST", "/v1/auth/token", body={"username": gina, "password": "x"})[0] == 401


def test_a_changed_name_claim_renames_the_user_on_the_next_login(idp_stack: Stack, idp_key: SigningKey,
                                                                unique: Callable[[str], str]) -> None:
    ivy = unique("ivy")
    assert mqtt_accepts(idp_stack, ivy, idp_key.token(ivy, extra={"name": "Ivy"}))
    plain = idp_key.token(ivy)  # no name claim: reads the name without changing it
    assert idp_stack.http("GET", "/v1/me", token=plain)[1]["display_name"] == "Ivy"
    assert mqtt_accepts(idp_stack, ivy, idp_key.token(ivy, extra={"name": "Ivy Long"}))  # renamed in the app
    assert idp_stack.http("GET", "/v1/me", token=plain)[1]["display_name"] == "Ivy Long"
    assert http_status(idp_stack, idp_key.token(ivy, extra={"name": "Ivy L."})) == 200  # over HTTP too
    status, profiles = idp_stack.http("GET", f"/v1/users?id={ivy}", token=plain)
    assert status == 200 and profiles["users"][0]["display_name"] == "Ivy L."


def test_known_keys_keep_working_while_the_jwks_is_unreachable(idp_stack: Stack, idp_key: SigningKey,
                                                               jwks: JwksServer,
                                                               unique: Callable[[str], str]) -> None:
    hank = unique("hank")
    idp_stack.add_user(hank)
    assert mqtt_accepts(idp_stack, hank, idp_key.token(hank))
    assert http_status(idp_stack, idp_key.token(hank)) == 200
    jwks.down = True
    try:
        time.sleep(1.2)  # past CHATMQ_IDP_JWKS_REFRESH_S: every verifier tries to refresh and fails
        assert mqtt_accepts(idp_stack, hank, idp_key.token(hank))
        assert http_status(idp_stack, idp_key.token(hank)) == 200
        assert not mqtt_accepts(idp_stack, hank, SigningKey("RS256").token(hank))
    finally:
        jwks.down = False
