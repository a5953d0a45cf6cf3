"""The admin channel's wire format, the admin identity's access, and token revocation in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chatmq.core.access import Action, Identity, Membership, authorize
from chatmq.core.auth import Authenticator, hash_password, issue_token, token_claims
from chatmq.core.config import ADMIN_USER
from chatmq.core.control import (
    REQUEST_TOPIC,
    RESPONSE_FILTER,
    Command,
    ControlError,
    encode_request,
    is_request_id,
    parse_request,
    response_topic,
)
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import Store, open_store

pytestmark = pytest.mark.timeout(30)
SECRET = "k" * 32


class _NoMembers(Membership):
    def is_member(self, conv: str, user: str) -> bool:
        return False

    def shares_conversation(self, user: str, other: str) -> bool:
        return False


def test_requests_round_trip_and_bad_ones_are_named() -> None:
    assert parse_request(encode_request("r1", Command.KICK, {"user": "a"})) == ("r1", Command.KICK, {"user": "a"})
    for payload, code in ((b"{", "bad_request"), (b"[]", "bad_request"), (b'{"id": "a/b", "command": "stats"}',
                          "bad_request"), (b'{"id": "x", "command": "reboot"}', "unknown_command"),
                          (b'{"id": "x", "command": "stats", "args": 3}', "bad_request")):
        with pytest.raises(ControlError) as info:
            parse_request(payload)
        assert info.value.code == code, payload


def test_the_admin_may_only_read_its_responses_and_send_requests() -> None:
    admin, members = Identity(ADMIN_USER, is_admin=True), _NoMembers()
    assert is_request_id("abc") and is_request_id("x" * 64)
    assert not any(is_request_id(bad) for bad in ("", "a/b", "+", "a#", "x" * 65))
    assert authorize(admin, Action.PUBLISH, REQUEST_TOPIC, members)
    assert not authorize(Identity("alice"), Action.PUBLISH, REQUEST_TOPIC, members)
    assert authorize(admin, Action.SUBSCRIBE, RESPONSE_FILTER, members)
    assert authorize(admin, Action.RECEIVE, response_topic("abc"), members)
    for topic in ("$CONTROL/#", "$CONTROL/chatmq/v1/response/#", "chat/c/msg", "#", "user/alice/ack"):
        assert not authorize(admin, Action.SUBSCRIBE, topic, members), topic
    assert not authorize(admin, Action.PUBLISH, response_topic("abc"), members)
    assert not authorize(Identity("alice"), Action.SUBSCRIBE, RESPONSE_FILTER, members)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 's.db'}")
    opened.create_user("alice", hash_password("pw"))
    yield opened
    opened.close()


def test_admin_tokens_log_in_only_as_the_admin(store: Store, redis_client: redis.Redis) -> None:
    auth = Authenticator(store, SECRET, TokenRevocations(redis_client, 3600))
    admin = issue_token(SECRET, ADMIN_USER, 60, admin=True).token
    assert auth.authenticate(ADMIN_USER, admin) == Identity(ADMIN_USER, is_admin=True)
    assert auth.authenticate("alice", admin) is None
    assert auth.authenticate(ADMIN_USER, issue_token(SECRET, "alice", 60).token) is None
    assert auth.authenticate(ADMIN_USER, "pw") is None


def test_revoking_a_user_revokes_older_tokens_only(store: Store, redis_client: redis.Redis) -> None:
    revocations = TokenRevocations(redis_client, 3600)
    auth = Authenticator(store, SECRET, revocations)
    old = issue_token(SECRET, "alice", 600).token
    assert auth.authenticate("alice", old) is not None
    revocations.revoke_user("alice")
    time.sleep(0.002)
    new = issue_token(SECRET, "alice", 600).token
    assert auth.authenticate("alice", old) is None
    assert auth.authenticate("alice", new) is not None
    assert auth.authenticate("alice", "pw") is not None  # passwords are not tokens


def test_revoking_one_token_expires_with_it(store: Store, redis_client: redis.Redis) -> None:
    revocations = TokenRevocations(redis_client, 3600)
    auth = Authenticator(store, SECRET, revocations)
    one, other = issue_token(SECRET, "alice", 120).token, issue_token(SECRET, "alice", 120).token
    claims = token_claims(SECRET, one)
    assert claims is not None and revocations.revoke_token(claims)
    assert auth.authenticate("alice", one) is None and auth.authenticate("alice", other) is not None
    ttls = [redis_client.ttl(key) for key in redis_client.scan_iter("chatmq:{alice}:revoked:*")]
    assert ttls and all(0 < ttl <= 121 for ttl in ttls)


def test_unreachable_redis_refuses_tokens(store: Store) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from chatmq.core.netutil import free_port

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    auth = Authenticator(store, SECRET, TokenRevocations(dead, 60))
    with pytest.raises(redis.ConnectionError):
        auth.authenticate("alice", issue_token(SECRET, "alice", 60).token)
