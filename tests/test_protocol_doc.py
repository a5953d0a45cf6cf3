"""docs/protocol.md against the code it describes, so the two cannot drift apart silently.

Device developers build from the document, the server from chatmq.core.protocol and chatmq.core.access:
every topic, QoS, error code, limit and setting the document names is checked against the code,
its JSON examples are run through the real parsers and builders, its access tables are the rule
table's own rows (chatmq.core.access.describe) and its access examples are run through authorize().
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest

from chatmq.api.errors import CODES
from chatmq.core import protocol
from chatmq.core.access import Action, Identity, Membership, authorize, describe
from chatmq.core.config import SERVICE_USER, Settings
from chatmq.core.ids import is_valid_id
from chatmq.core.store.base import Change, Message, MessageView, Reactions

pytestmark = pytest.mark.timeout(30)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# Each topic builder, called with placeholders, and the QoS the contract gives its topic.
TOPICS: dict[str, int] = {
    protocol.send_topic("{conv}", "{user}"): protocol.QOS_SEND,
    protocol.msg_topic("{conv}"): protocol.QOS_MSG,
    protocol.ack_topic("{user}"): protocol.QOS_ACK,
    protocol.typing_topic("{conv}", "{user}"): protocol.QOS_TYPING,
    protocol.device_presence_topic("{user}", "{device}"): protocol.QOS_PRESENCE,
    protocol.presence_topic("{user}"): protocol.QOS_PRESENCE,
    protocol.receipt_topic("{conv}", "{user}"): protocol.QOS_RECEIPT,
    protocol.receipts_topic("{conv}"): protocol.QOS_RECEIPTS,
    protocol.events_topic("{user}"): protocol.QOS_EVENTS,
    protocol.history_request_topic("{user}"): protocol.QOS_HISTORY,
    protocol.history_response_topic("{user}"): protocol.QOS_HISTORY,
}


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(doc: str, heading: str) -> str:
    """The text under a heading line (any level) up to the next heading of the same or higher level."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", doc, re.M)
    assert match, f"docs/protocol.md has no heading {heading!r}"
    level = len(match[1])
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(doc, match.end())
    return doc[match.end() : end.start() if end else len(doc)]


def _table(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in text, cells stripped."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows[1:]  # drop the header


def _json_blocks(text: str) -> list[dict[str, Any]]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]


def _code(value: str) -> str:
    return f"`{value}`"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---------------------------------------------------------------------------------------------
# Topics


def test_every_topic_is_documented_with_its_qos(doc: str) -> None:
    rows = _table(_section(doc, "Topics"))
    documented = {row[0].strip("`"): row for row in rows}
    assert set(documented) == set(TOPICS), "the topics table must list exactly chatmq.core.protocol's topics"
    for topic, qos in TOPICS.items():
        assert _code(topic) in doc
        assert documented[topic][3] == str(qos), f"{topic}: QoS in the doc is not {qos}"
    retained = {topic for topic, row in documented.items() if row[4] == "yes"}
    assert retained == {protocol.presence_topic("{user}")}


def test_bridge_subscriptions_are_documented(doc: str) -> None:
    for topic_filter, _qos in protocol.BRIDGE_SUBSCRIPTIONS:
        assert _code(topic_filter) in doc, f"bridge subscription {topic_filter} is not documented"
    assert _code(SERVICE_USER) in doc


def test_namespaces_are_documented(doc: str) -> None:
    access = _section(doc, "Access rules")
    for namespace in protocol.NAMESPACES:
        assert _code(f"{namespace}/") in access


# ---------------------------------------------------------------------------------------------
# Payload examples, run through the real parsers and builders


def test_send_examples_are_valid_sends(doc: str) -> None:
    message, reply = _json_blocks(_section(doc, "`chat/{conv}/send/{user}`: send a message"))
    payload = protocol.parse_send(protocol.encode(message))
    assert isinstance(payload, protocol.SendPayload) and payload.attachments, "the example should attach"
    answer = protocol.parse_send(protocol.encode(reply))
    assert isinstance(answer, protocol.SendPayload) and answer.reply_to is not None


def test_change_examples_are_valid_and_cover_every_kind(doc: str) -> None:
    section = _section(doc, "`chat/{conv}/send/{user}`: change a message")
    parsed = [protocol.parse_send(protocol.encode(example), conv="team") for example in _json_blocks(section)]
    assert {p.kind for p in parsed} == {k.value for k in protocol.CHANGE_KINDS}
    documented_kinds = re.findall(r"`(\w+)`", _table(section)[1][2])
    assert set(documented_kinds) == {k.value for k in protocol.CHANGE_KINDS}
    assert f"1 to {protocol.MAX_EMOJI_BYTES} bytes" in section


def _stored(example: dict[str, Any]) -> Message:
    fields = {k: v for k, v in example.items() if k not in ("attachments", "erased")}
    return Message(**fields, attachments=tuple(example["attachments"]), erased=example.get("erased", False))


def test_msg_example_has_the_stored_message_shape(doc: str) -> None:
    example, notice = _json_blocks(_section(doc, "`chat/{conv}/msg`: a stored message"))
    assert _stored(example).to_payload() == example
    assert notice == protocol.message_notice(notice["conv"], notice["seq"], notice["sender"], notice["ts"])


def test_entry_examples_have_the_stored_entry_shape(doc: str) -> None:
    examples = _json_blocks(_section(doc, "`chat/{conv}/msg`: changes in the log"))
    assert len(examples) >= 3
    for example in examples:
        assert example["kind"] in {k.value for k in protocol.CHANGE_KINDS}
        assert _stored(example).to_payload() == example
        notice = protocol.message_notice_of(example)
        assert notice["kind"] == example["kind"] and notice["notice"] is True


def test_history_view_examples_have_the_view_shape(doc: str) -> None:
    section = _section(doc, "`GET /v1/conversations/{conv}/messages`")
    for example in _json_blocks(section):
        change = {k: Change(v["seq"], v.get("by", example["sender"]), v["ts"]) if v else None
                  for k, v in example.items() if k in ("edited", "deleted")}
        reactions = tuple(Reactions(r["emoji"], tuple(r["users"])) for r in example["reactions"])
        plain = {k: v for k, v in example.items() if k not in ("edited", "deleted", "reactions")}
        view = MessageView(_stored(plain), reactions=reactions, **change)
        assert view.to_payload() == example
    fields = {row[0].strip("`") for row in _table(section.split("One message:")[1])}
    assert fields == {"body", "attachments", "reply_to", "edited", "deleted", "reactions"}
    for view_name in protocol.HISTORY_VIEWS:
        assert f"`view={view_name}`" in section


def test_history_over_mqtt_examples_match_the_code(doc: str) -> None:
    section = _section(doc, "`user/{user}/history/request` and `.../response`: history over MQTT")
    request, page, refused = _json_blocks(section)
    parsed = protocol.parse_history_request(protocol.encode(request))
    assert parsed.id == request["id"]
    built = protocol.history_page(page["id"], page["conv"], page["messages"], page["has_more"], page["last_seq"],
                                  page["first_seq"])
    assert built == page
    for message in page["messages"]:
        assert _stored(message).to_payload() == message
    error = protocol.HistoryRequestError(protocol.HistoryErrorCode(refused["error"]["code"]),
                                         refused["error"]["message"], refused["id"], refused["conv"])
    assert protocol.history_refused(error) == refused
    fields = {row[0] for row in _table(section)}
    assert fields == {_code(f) for f in ("id", "conv", "view", "max_bytes")} | {"`before`, `after`, `limit`"}
    assert set(protocol.HistoryRequest.model_fields) == {"id", "conv", "before", "after", "limit", "view", "max_bytes"}
    for code in protocol.HistoryErrorCode:
        assert _code(code.value) in section and code.value in CODES.values()
    assert f"default {protocol.DEFAULT_HISTORY_REPLY_BYTES}" in section


def test_search_examples_match_the_code(doc: str) -> None:
    from chatmq.core import search
    from chatmq.core.store.base import search_result

    section = _section(doc, "`GET /v1/search`")
    (page,) = _json_blocks(section)
    assert set(page) == {"results", "next"}
    search.decode_cursor(page["next"], (int,))  # a cursor the embedded store makes
    over_mqtt = _section(doc, "Search over MQTT: a request with `q`")
    request, reply = _json_blocks(over_mqtt)
    parsed = protocol.parse_history_request(protocol.encode(request))
    assert isinstance(parsed, protocol.SearchRequest) and parsed.q == request["q"]
    assert protocol.search_results(reply["id"], reply["results"], reply["next"]) == reply
    for result in [*page["results"], *reply["results"]]:
        view = MessageView(_stored({k: v for k, v in result.items() if k not in ("edited", "deleted")}))
        assert search_result(view) == result
    fields = {row[0] for row in _table(over_mqtt)}
    assert fields == {"`id`", "`q`", "`conv`, `sender`, `before`, `limit`", "`max_bytes`"}
    assert set(protocol.SearchRequest.model_fields) == {"id", "q", "conv", "sender", "before", "limit", "max_bytes"}
    limits = {row[0]: row[1] for row in _table(_section(doc, "Limits"))}
    assert limits["search (`q`)"] == (f"at most {search.MAX_QUERY_CHARS} characters and {search.MAX_QUERY_TERMS} "
                                      f"different words; each word is cut to {search.MAX_TERM_CHARS} characters")
    assert limits["search page (`limit`)"] == f"1 to {search.MAX_SEARCH_LIMIT}, default {search.DEFAULT_SEARCH_LIMIT}"


def test_receipt_examples_match_the_code(doc: str) -> None:
    sent, refused = _json_blocks(_section(doc, "`chat/{conv}/receipt/{user}`: delivered / read receipt"))
    parsed = protocol.parse_receipt(protocol.encode(sent))
    code = protocol.ErrorCode(refused["error"]["code"])
    built = protocol.receipt_rejected(
        refused["conv"], code, refused["error"]["message"], refused["ts"], seq=refused["seq"], status=refused["status"]
    )
    assert refused == built
    (announced,) = _json_blocks(_section(doc, "`chat/{conv}/receipts`: receipts for the conversation"))
    assert announced == protocol.receipt(announced["user"], announced["seq"], announced["status"], announced["ts"])
    assert parsed.status in protocol.RECEIPT_STATUSES


def test_event_examples_and_kinds_match_the_code(doc: str) -> None:
    section = _section(doc, "`user/{user}/events`: what changed for you")
    (example,) = _json_blocks(section)
    kind = protocol.EventKind(example["event"])
    assert example == protocol.conversation_event(kind, example["conv"], example["ts"], title=example["title"])
    assert {row[0].strip("`") for row in _table(section)} == {k.value for k in protocol.EventKind}


def test_ack_examples_match_the_builders(doc: str) -> None:
    received, rejected = _json_blocks(_section(doc, "`user/{user}/ack`: the result of a send"))
    built = protocol.received_ack(received["client_msg_id"], received["conv"], received["seq"], received["ts"])
    assert received == built
    code = protocol.ErrorCode(rejected["error"]["code"])
    built = protocol.rejected_ack(rejected["client_msg_id"], rejected["conv"], code, rejected["error"]["message"])
    assert rejected == built


def test_typing_and_presence_examples_parse(doc: str) -> None:
    for heading, parse in (
        ("`chat/{conv}/typing/{user}`: typing indicator", protocol.parse_typing),
        ("`presence/{user}/{device}`: device presence", protocol.parse_device_presence),
    ):
        (example,) = _json_blocks(_section(doc, heading))
        parse(protocol.encode(example))
    (example,) = _json_blocks(_section(doc, "`presence/{user}`: user presence (retained)"))
    assert example == protocol.user_presence(example["user"], example["status"] == "online", example["last_seen"])


def test_every_json_example_parses(doc: str) -> None:
    assert len(_json_blocks(doc)) >= 7


# ---------------------------------------------------------------------------------------------
# Errors, limits, settings


def test_every_error_code_is_explained(doc: str) -> None:
    rows = _table(_section(doc, "Sending: acks, idempotence, errors"))
    explained = {row[0].strip("`") for row in rows}
    assert explained == {code.value for code in protocol.ErrorCode}


def test_http_error_codes_are_documented(doc: str) -> None:
    api = _section(doc, "HTTP API v1")
    for code in [*CODES.values(), "invalid_credentials"]:
        assert _code(code) in api, f"HTTP error code {code} is not documented"
    assert '{"error": {"code":' in api


def test_limits_match_the_code(doc: str) -> None:
    limits = {row[0]: row[1] for row in _table(_section(doc, "Limits"))}
    assert str(protocol.DEFAULT_MAX_BODY_BYTES) in limits["`body`"]
    assert limits["`client_msg_id`"] == f"1 to {protocol.MAX_CLIENT_MSG_ID_CHARS} characters"
    assert limits["`attachments`"] == f"at most {protocol.MAX_ATTACHMENTS} objects"
    conn = protocol.DevicePresencePayload.model_fields["conn"].metadata
    assert limits["`conn`"] == f"1 to {next(m.max_length for m in conn if hasattr(m, 'max_length'))} characters"
    assert limits["user, conversation, device ids"] == "1 to 64 characters of `[A-Za-z0-9_.-]`, except `.` and `..`"
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert limits["sessions of one user on one broker"].startswith(f"{defaults['sessions_per_user']} (")
    assert limits["devices of one user in presence"].startswith(f"{defaults['presence_devices_per_user']} live")
    alphabet = string.ascii_letters + string.digits + "_.-"
    assert all(is_valid_id(c * n) for c in alphabet if c != "." for n in (1, 2, 64))
    assert [n for n in (1, 2, 3, 64) if is_valid_id("." * n)] == [3, 64]
    assert not any(is_valid_id(c) for c in "/+#$ \0é") and not is_valid_id("a" * 65)
    assert limits["`emoji`"].startswith(f"1 to {protocol.MAX_EMOJI_BYTES} bytes")
    per_member = protocol.MAX_REACTIONS_PER_MEMBER
    assert limits["reactions"] == f"at most {per_member} different emoji per member on one message"
    assert limits["MQTT history response (`max_bytes`)"] == (
        f"{protocol.MIN_HISTORY_REPLY_BYTES} to {protocol.MAX_HISTORY_REPLY_BYTES} bytes, "
        f"default {protocol.DEFAULT_HISTORY_REPLY_BYTES}"
    )
    assert limits["history page (`limit`)"] == (
        f"1 to {protocol.MAX_HISTORY_LIMIT}, default {protocol.DEFAULT_HISTORY_LIMIT}"
    )


def test_presence_timing_matches_the_settings(doc: str) -> None:
    presence = _section(doc, "Presence")
    defaults = Settings.model_fields
    interval = defaults["heartbeat_interval_s"].default
    factor = defaults["presence_ttl_factor"].default
    assert f"every heartbeat interval ({_number(interval)} s by default" in presence
    assert f"heartbeat interval \N{MULTIPLICATION SIGN} {_number(factor)}" in presence
    assert f"({_number(interval * factor)} s by default" in presence


def test_documented_settings_exist(doc: str) -> None:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    named = set(re.findall(rf"`({prefix}[A-Z0-9_]+)`", doc))
    assert named, "the doc should name the settings a deployment can change"
    for variable in named:
        assert variable.removeprefix(prefix).lower() in Settings.model_fields, f"{variable} is not a setting"


# ---------------------------------------------------------------------------------------------
# Access examples, run through authorize()


class _Memberships(Membership):
    def __init__(self, convs: dict[str, set[str]]) -> None:
        self._convs = convs

    def is_member(self, conv: str, user: str) -> bool:
        return user in self._convs.get(conv, set())

    def shares_conversation(self, user: str, other: str) -> bool:
        return any(user in members and other in members for members in self._convs.values())


# The docs' access tables: their marker, the action and whether topics nobody may use are listed.
ACCESS_TABLES = (
    ("publish", Action.PUBLISH, False), ("subscribe", Action.SUBSCRIBE, False), ("will", Action.WILL, True),
)


@pytest.mark.parametrize(("marker", "action", "granted_only"), ACCESS_TABLES)
def test_access_tables_are_the_rule_table(doc: str, marker: str, action: Action, granted_only: bool) -> None:
    match = re.search(rf"<!-- access-rules:{marker} -->\n(.*?)<!-- access-rules:end -->", doc, re.S)
    assert match, f"docs/protocol.md has no access-rules:{marker} table"
    expected = "\n".join(f"| {topic} | {who} |" for topic, who in describe(action, granted_only=granted_only))
    documented = "\n".join(line for line in match[1].splitlines()[2:])
    assert documented == expected, f"the {marker} table should read (from chatmq.core.access.RULES):\n{expected}"


def _access_examples(doc: str) -> list[list[str]]:
    match = re.search(r"<!-- access-examples:begin -->(.*?)<!-- access-examples:end -->", doc, re.S)
    assert match, "the access examples table is missing its markers"
    return _table(match[1])


def test_access_examples_are_what_authorize_decides(doc: str) -> None:
    membership = _Memberships({"team": {"alice", "bob"}, "other": {"carol"}})
    rows = _access_examples(doc)
    assert len(rows) >= 20
    seen_actions = set()
    for user, action, topic, allowed in rows:
        verdict = authorize(Identity(user), Action(action), topic.strip("`"), membership)
        assert verdict == (allowed == "yes"), f"{user} {action} {topic}: doc says {allowed}, code says {verdict}"
        seen_actions.add(Action(action))
    assert seen_actions == set(Action)
