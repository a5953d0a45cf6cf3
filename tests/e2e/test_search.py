"""Search on the real stack (`chatmq up`: broker, bridge, API): a message is found over HTTP and
over MQTT through the client library as soon as it is acked, an edit changes what finds it at
once, a deletion removes it, and a removed member finds nothing of that conversation any more."""

from __future__ import annotations

import uuid

import pytest

from chatmq.clients.history import ApiError
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)


def word() -> str:
    return "w" + uuid.uuid4().hex[:10]  # a word no other test's message has


def test_search_follows_the_log_and_the_membership(stack: Stack, trio: tuple[str, str, str, str]) -> None:
    alice, bob, carol, conv = trio
    old, new, other = word(), word(), word()
    bob_token, carol_token = stack.token(bob), stack.token(carol)

    def over_http(user_token: str, q: str, **params: str) -> list[tuple[int, str]]:
        query = "&".join(f"{k}={v}" for k, v in {"q": q, **params}.items())
        status, body = stack.http("GET", f"/v1/search?{query}", token=user_token)
        assert status == 200, body
        return [(r["seq"], r["body"]) for r in body["results"]]

    with stack.client(alice, api_url=stack.base_url) as a, \
            stack.client(bob, device="mqtt-only", history_over_mqtt=True) as b:  # fmt: skip
        assert b.history is not None

        def over_mqtt(q: str) -> list[tuple[int, str]]:
            return [(r["seq"], r["body"]) for r in b.history.search(q)["results"]]  # type: ignore[union-attr]

        seq = a.send(conv, f"the {old} plan, Café at noon").result(10).seq
        assert over_http(bob_token, old) == [(seq, f"the {old} plan, Café at noon")]  # as soon as acked
        assert over_mqtt(f"{old.upper()} cafe") == [(seq, f"the {old} plan, Café at noon")]
        assert over_http(carol_token, old) == []  # not carol's conversation
        assert a.history.search(old, conv=conv, sender=alice)["results"][0]["seq"] == seq  # type: ignore[union-attr]

        a.edit(conv, seq, f"the {new} plan").result(10)
        assert over_http(bob_token, old) == [] and over_mqtt(old) == []
        assert over_http(bob_token, new) == [(seq, f"the {new} plan")] == over_mqtt(new)

        a.delete(conv, seq).result(10)
        assert over_http(bob_token, new) == [] and over_mqtt(new) == []

        kept = a.send(conv, f"{other} stays").result(10).seq
        assert over_mqtt(other) == [(kept, f"{other} stays")]
        stack.admin("conv", "remove-member", conv, bob)
        assert over_http(bob_token, other) == [] and over_mqtt(other) == []
        status, body = stack.http("GET", f"/v1/search?q={other}&conv={conv}", token=bob_token)
        assert status == 403 and body["error"]["code"] == "forbidden"
        with pytest.raises(ApiError) as refused:
            b.history.search(other, conv=conv)
        assert refused.value.code == "forbidden"
        assert over_http(stack.token(alice), other) == [(kept, f"{other} stays")]
