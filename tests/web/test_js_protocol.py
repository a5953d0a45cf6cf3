"""The browser library's protocol module (web/src/lib/protocol.js) against chatmq.core.protocol: the
topic names, QoS and id rule a browser uses are the server's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from chatmq.core import protocol
from chatmq.core.ids import ID_PATTERN

pytestmark = pytest.mark.timeout(60)

LIB = Path(__file__).resolve().parents[2] / "web" / "src" / "lib" / "protocol.js"
SAMPLES = ["chat/team/send/alice", "chat/team/msg", "chat/team/typing/bob", "chat/team/receipt/bob",
           "chat/team/receipts", "user/alice/ack", "user/alice/events", "presence/bob", "presence/bob/web-1",
           "chat/+/msg", "sensors/kitchen", "user/alice/other", "chat/team", "presence/a/b/c"]  # fmt: skip
SCRIPT = """
const p = await import(process.argv[1]);
const t = p.topics;
const parsed = Object.fromEntries(JSON.parse(process.argv[2]).map((s) => [s, p.parseTopic(s)?.kind ?? null]));
console.log(JSON.stringify({
  topics: {send: t.send('{conv}', '{user}'), msg: t.msg('{conv}'), ack: t.ack('{user}'),
           typing: t.typing('{conv}', '{user}'), device_presence: t.devicePresence('{user}', '{device}'),
           user_presence: t.presence('{user}'), receipt: t.receipt('{conv}', '{user}'),
           receipts: t.receipts('{conv}'), events: t.events('{user}')},
  qos: p.QOS, idPattern: p.ID_PATTERN.source, parsed,
}));
"""


@pytest.fixture(scope="module")
def js() -> dict[str, object]:
    out = subprocess.run(["node", "--input-type=module", "-e", SCRIPT, LIB.as_uri(), json.dumps(SAMPLES)],
                         capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    return dict(json.loads(out.stdout))


def test_topic_names_and_qos_are_the_servers(js: dict[str, object]) -> None:
    assert js["topics"] == {
        "send": protocol.send_topic("{conv}", "{user}"), "msg": protocol.msg_topic("{conv}"),
        "ack": protocol.ack_topic("{user}"), "typing": protocol.typing_topic("{conv}", "{user}"),
        "device_presence": protocol.device_presence_topic("{user}", "{device}"),
        "user_presence": protocol.presence_topic("{user}"), "receipt": protocol.receipt_topic("{conv}", "{user}"),
        "receipts": protocol.receipts_topic("{conv}"), "events": protocol.events_topic("{user}"),
    }  # fmt: skip
    assert js["qos"] == {
        "send": protocol.QOS_SEND, "msg": protocol.QOS_MSG, "ack": protocol.QOS_ACK, "typing": protocol.QOS_TYPING,
        "presence": protocol.QOS_PRESENCE, "receipt": protocol.QOS_RECEIPT, "receipts": protocol.QOS_RECEIPTS,
        "events": protocol.QOS_EVENTS,
    }  # fmt: skip


def test_topics_parse_to_the_same_kinds(js: dict[str, object]) -> None:
    for topic in SAMPLES:
        parsed = protocol.parse_topic(topic)
        assert js["parsed"][topic] == (parsed.kind.value if parsed else None), topic  # type: ignore[index]


def test_the_id_rule_is_the_servers(js: dict[str, object]) -> None:
    assert js["idPattern"] == f"^{ID_PATTERN}$"
