"""Search over MQTT (a request with ``q`` on user/{me}/history/request) through a real Mosquitto and
bridge: GET /v1/search's results, cursors and refusals (tests/api/test_search.py), the same access
rule read on every request, and the device's byte budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from chatmq.bridge.service import Bridge
from chatmq.core.config import Settings
from chatmq.core.history import search_messages
from chatmq.core.protocol import EntryKind
from chatmq.core.store import NewMessage, Store
from tests.bridge.devices import Device
from tests.bridge.test_history_sync import Syncer

pytestmark = pytest.mark.timeout(60)

TOTAL = 60


@pytest.fixture
def said(store: Store) -> Store:
    store.append([NewMessage("c1", "alice" if i % 2 else "bob", f"m{i}", f"invoice {i} " + "x" * (i * 10), 1_000 + i)
                  for i in range(1, TOTAL + 1)])  # fmt: skip
    return store


def search(syncer: Syncer, **request: Any) -> dict[str, Any]:
    reply = syncer.ask(dict(request))
    assert reply["status"] == "ok" and set(reply) == {"id", "status", "results", "next"}, reply
    return reply


def test_results_and_cursors_are_the_http_apis(bridge: Bridge, said: Store, device: Callable[..., Device]) -> None:
    alice = Syncer(device, "alice")
    first = search(alice, q="invoice", limit=7)
    expected = search_messages(said, "alice", "invoice", limit=7)
    assert first["results"] == expected.to_payload()["results"] and first["next"] == expected.next
    seen = [r["seq"] for r in first["results"]]
    reply = first
    while reply["next"]:
        reply = search(alice, q="invoice", limit=25, before=reply["next"])
        seen += [r["seq"] for r in reply["results"]]
    assert seen == list(range(TOTAL, 0, -1))
    assert [r["seq"] for r in search(alice, q="INVOICE 7", conv="c1", sender="alice")["results"]] == [7]


def test_edits_and_deletions_show_at_once(bridge: Bridge, said: Store, device: Callable[..., Device]) -> None:
    alice = Syncer(device, "alice")
    said.append([NewMessage("c1", "alice", "e", "receipt please", 5_000, kind=EntryKind.EDIT, target=3)])
    assert [r["body"] for r in search(alice, q="receipt")["results"]] == ["receipt please"]
    said.append([NewMessage("c1", "alice", "d", "", 5_001, kind=EntryKind.DELETE, target=3)])
    assert search(alice, q="receipt")["results"] == []


def test_a_page_fits_the_devices_byte_budget(bridge: Bridge, said: Store, device: Callable[..., Device]) -> None:
    alice = Syncer(device, "alice")
    seen: list[int] = []
    reply: dict[str, Any] = {"next": None}
    while True:
        reply = search(alice, q="invoice", limit=100, max_bytes=1024, **({"before": reply["next"]} if seen else {}))
        assert len(reply["results"]) == 1 or len(orjson.dumps(reply)) <= 1024
        seen += [r["seq"] for r in reply["results"]]
        if not reply["next"]:
            break
    assert seen == list(range(TOTAL, 0, -1))


@pytest.mark.parametrize(
    "request_",
    [{"q": ""}, {"q": "*"}, {"q": 5}, {"q": "x", "before": "nope"}, {"q": "x", "limit": 0}, {"q": "x", "limit": 101},
     {"q": "x", "sender": "../"}, {"q": "x", "max_bytes": 10}, {"q": "x", "view": "messages"}],
)
def test_bad_requests_are_refused(bridge: Bridge, said: Store, device: Callable[..., Device],
                                  request_: dict[str, Any]) -> None:  # fmt: skip
    assert Syncer(device, "alice").error(dict(request_)) == "bad_request"


def test_access_is_checked_on_every_request(bridge: Bridge, said: Store, device: Callable[..., Device]) -> None:
    dave, bob = Syncer(device, "dave"), Syncer(device, "bob")
    assert search(dave, q="invoice")["results"] == []  # no conversation of dave's has it
    assert dave.error({"q": "invoice", "conv": "c1"}) == "forbidden"
    assert bob.error({"q": "invoice", "conv": "nope"}) == "not_found"
    assert search(bob, q="invoice")["results"]
    said.remove_member("c1", "bob")  # read for every request: a removed member finds nothing at once
    assert search(bob, q="invoice")["results"] == []
    assert bob.error({"q": "invoice", "conv": "c1"}) == "forbidden"


def test_searches_share_the_history_request_rate(
    settings: Settings, start_bridge: Callable[..., Bridge], said: Store, device: Callable[..., Device]
) -> None:
    start_bridge(settings=settings.model_copy(update={"history_requests_per_s": 0.1, "history_requests_burst": 2}))
    alice = Syncer(device, "alice")
    assert [alice.ask({"q": "invoice", "limit": 1})["status"] for _ in range(3)] == ["ok", "ok", "error"]
    assert alice.error({"conv": "c1"}) == "rate_limited"
