"""History pages over MQTT (user/{me}/history/request -> .../response) through a real Mosquitto and
bridge: the HTTP API's cursors, limits and refusals (tests/api/test_history.py, mirrored here), plus
the byte budget a small device asks for."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.protocol import EntryKind
from chatmq.core.store import NewMessage, Store
from tests.bridge.devices import Device

pytestmark = pytest.mark.timeout(60)

TOTAL = 120
_ids = itertools.count()


class Syncer:
    """A device that asks for pages and waits for each answer (matched by id)."""

    def __init__(self, device: Callable[..., Device], user: str) -> None:
        self.user = user
        self.dev = device(user, [f"user/{user}/history/response"])

    def ask(self, request: dict[str, Any] | bytes, *, request_id: str | None = None) -> dict[str, Any]:
        if isinstance(request, dict):
            request_id = request.setdefault("id", f"h{next(_ids)}")
        self.dev.publish(f"user/{self.user}/history/request", request)
        topic = f"user/{self.user}/history/response"
        self.dev.wait_for(lambda: any(r.get("id") == request_id for r in self.dev.on(topic)),
                          what=f"reply {request_id}")
        return next(r for r in self.dev.on(topic) if r.get("id") == request_id)

    def page(self, **request: Any) -> dict[str, Any]:
        reply = self.ask({"conv": "c1", **request})
        assert reply["status"] == "ok", reply
        return reply

    def error(self, request: dict[str, Any] | bytes, **kw: Any) -> str:
        reply = self.ask(request, **kw)
        assert reply["status"] == "error" and set(reply) <= {"id", "conv", "status", "error"}, reply
        return str(reply["error"]["code"])


@pytest.fixture
def filled(store: Store) -> Store:
    store.append([NewMessage("c1", "alice" if i % 2 else "bob", f"m{i}", f"hello {i}", 1_000 + i)
                  for i in range(1, TOTAL + 1)])
    return store


def seqs(reply: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in reply["messages"]]


def test_pages_and_cursors_are_the_http_apis(bridge: Bridge, filled: Store, device: Callable[..., Device]) -> None:
    alice = Syncer(device, "alice")
    newest = alice.page()
    assert seqs(newest) == list(range(TOTAL - 49, TOTAL + 1)) and newest["has_more"] is True
    assert newest["last_seq"] == TOTAL and newest["conv"] == "c1"
    assert newest["messages"][-1] == filled.history("c1", limit=1).messages[0].to_payload()

    collected: list[int] = []  # catch up from the start, as a device after a week offline would
    cursor = 0
    while True:
        reply = alice.page(after=cursor, limit=33)
        collected += seqs(reply)
        if not reply["has_more"]:
            break
        cursor = seqs(reply)[-1]
    assert collected == list(range(1, TOTAL + 1))

    backwards: list[int] = []
    reply = alice.page(limit=40)
    while True:
        backwards = seqs(reply) + backwards
        if not reply["has_more"]:
            break
        reply = alice.page(before=seqs(reply)[0], limit=40)
    assert backwards == list(range(1, TOTAL + 1))
    assert seqs(alice.page(after=TOTAL)) == [] and alice.page(after=TOTAL)["has_more"] is False


def test_both_views(bridge: Bridge, filled: Store, device: Callable[..., Device]) -> None:
    filled.append([NewMessage("c1", "alice", "e1", "edited", 5_000, kind=EntryKind.EDIT, target=TOTAL - 1),
                   NewMessage("c1", "bob", "r1", "👍", 5_001, kind=EntryKind.REACT, target=TOTAL - 1, emoji="👍")])
    alice = Syncer(device, "alice")
    entries = alice.page(after=TOTAL - 2)
    assert [m.get("kind") for m in entries["messages"]] == [None, None, "edit", "react"]
    current = alice.page(view="messages", limit=2)
    assert seqs(current) == [TOTAL - 1, TOTAL] and current["last_seq"] == TOTAL + 2
    edited = current["messages"][0]
    assert edited["body"] == "edited" and edited["edited"] == {"seq": TOTAL + 1, "ts": 5_000}
    assert edited["reactions"] == [{"emoji": "👍", "count": 1, "users": ["bob"]}]


def test_a_page_fits_the_devices_byte_budget(bridge: Bridge, filled: Store, device: Callable[..., Device]) -> None:
    alice = Syncer(device, "alice")
    collected: list[int] = []
    cursor = 0
    sizes: list[int] = []
    while True:
        reply = alice.page(after=cursor, limit=200, max_bytes=1024)
        sizes.append(len(orjson.dumps(reply)))
        assert 1 <= len(reply["messages"]) < 20
        collected += seqs(reply)
        if not reply["has_more"]:
            break
        cursor = seqs(reply)[-1]
    assert collected == list(range(1, TOTAL + 1)) and max(sizes) <= 1024
    newest = alice.page(limit=200, max_bytes=1024)  # walking back keeps the newest
    assert seqs(newest)[-1] == TOTAL and newest["has_more"] is True
    # one entry bigger than the budget still comes, alone, so the walk moves on
    filled.append([NewMessage("c1", "bob", "big", "x" * 3000, 9_000)])
    big = alice.page(after=TOTAL, max_bytes=1024)
    assert seqs(big) == [TOTAL + 1] and big["has_more"] is False


@pytest.mark.parametrize("request_fields", [
    {"limit": 0}, {"limit": 201}, {"limit": "5"}, {"limit": 1.5}, {"before": 0}, {"before": -3}, {"after": -1},
    {"after": "x"}, {"befor": 10}, {"view": "poll"}, {"before": 10, "after": 2}, {"max_bytes": 100},
    {"after": 2**63},
])
def test_bad_requests_are_refused(bridge: Bridge, filled: Store, device: Callable[..., Device],
                                  request_fields: dict[str, Any]) -> None:
    assert Syncer(device, "alice").error({"conv": "c1", **request_fields}) == "bad_request"


def test_unreadable_requests_are_answered_with_an_empty_id(
    bridge: Bridge, filled: Store, device: Callable[..., Device]
) -> None:
    alice = Syncer(device, "alice")
    assert alice.error(b"not json", request_id="") == "bad_request"
    assert alice.error(b'["a list"]', request_id="") == "bad_request"
    assert alice.error({"conv": "c1", "id": ""}, request_id="") == "bad_request"
    reply = alice.ask({"id": "no-conv"})
    assert reply["error"]["code"] == "bad_request" and "conv" not in reply


def test_access_is_checked_on_every_request(
    bridge: Bridge, filled: Store, device: Callable[..., Device]
) -> None:
    dave, bob = Syncer(device, "dave"), Syncer(device, "bob")
    assert dave.error({"conv": "c1"}) == "forbidden"  # not a member
    for conv in ("nope", "bad$id", "x" * 65):
        assert bob.error({"conv": conv}) == "not_found"
    assert bob.page()["messages"]
    filled.remove_member("c1", "bob")  # no refresh interval: the store is read for every request
    assert bob.error({"conv": "c1"}) == "forbidden"


def test_requests_are_rate_limited(
    settings: Settings, start_bridge: Callable[..., Bridge], filled: Store, device: Callable[..., Device]
) -> None:
    start_bridge(settings=settings.model_copy(update={"history_requests_per_s": 0.1, "history_requests_burst": 3}))
    alice = Syncer(device, "alice")
    codes = [alice.ask({"conv": "c1", "limit": 1})["status"] for _ in range(5)]
    assert codes == ["ok", "ok", "ok", "error", "error"]
    assert alice.error({"conv": "c1"}) == "rate_limited"
    assert Syncer(device, "bob").page(limit=1)["messages"]  # per user
