"""permessage-deflate on the WebSocket listener follows CHATMQ_WS_PERMESSAGE_DEFLATE (off by
default: docs/benchmarks.md, "WebSocket compression"), and MQTT works over it either way."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from chatmq.core.auth import issue_token
from tests.broker.conftest import SECRET
from tests.broker.inproc import OURS
from tests.broker.raw import connect

pytestmark = pytest.mark.timeout(60)

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


@pytest.mark.parametrize("deflate", [False, True])
def test_the_browser_offer_is_accepted_only_when_configured(run_broker: Any, deflate: bool) -> None:
    running = run_broker(OURS, ws_permessage_deflate=deflate)
    # the websockets client offers permessage-deflate with client_max_window_bits, as browsers do
    with ws_connect(f"ws://127.0.0.1:{running.ws_port}/mqtt", subprotocols=["mqtt"], compression="deflate") as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in extensions) is deflate, extensions
        assert ws.subprotocol == "mqtt"
        token = issue_token(SECRET, "alice", 300).token
        ws.send(connect("alice.web-deflate", username="alice", password=token))
        assert ws.recv(timeout=10) == CONNACK_ACCEPTED


def test_off_by_default(run_broker: Any) -> None:
    running = run_broker(OURS)
    assert running.settings.ws_permessage_deflate is False
    with ws_connect(f"ws://127.0.0.1:{running.ws_port}/mqtt", subprotocols=["mqtt"], compression="deflate") as ws:
        assert "permessage-deflate" not in ws.response.headers.get("Sec-WebSocket-Extensions", "")
