"""``chatmq chat`` driven through pseudo-terminals, as a person would use it over ssh."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator

import pexpect
import pytest

from tests.clients.proxy import FlakyLink, MqttTap
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(120)


def _spawn(stack: Stack, user: str, *args: str, where: tuple[str, ...] | None = None) -> pexpect.spawn:
    """``chatmq chat`` in a pseudo-terminal; ``where`` replaces the explicit --port/--http-url
    (``()``: only the stack's data dir, through CHATMQ_DATA_DIR)."""
    env = {**stack.env(), "CHATMQ_PASSWORD": PASSWORD, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    if where is None:
        where = ("--port", str(stack.mqtt_port), "--http-url", stack.base_url)
    command = ["-m", "chatmq.cli", "chat", "--user", user, *where, *args]
    term = pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=20)
    term.logfile_read = io.StringIO()  # everything the screen showed, for the checks at the end
    return term


def _screen(term: pexpect.spawn) -> str:
    return str(term.logfile_read.getvalue())


@pytest.fixture
def terminals() -> Iterator[list[pexpect.spawn]]:
    spawned: list[pexpect.spawn] = []
    yield spawned
    for child in spawned:
        child.close(force=True)


def test_two_terminals_chat(stack: Stack, unique: Callable[[str], str], terminals: list[pexpect.spawn]) -> None:
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    with stack.client(alice, device="old") as a:
        a.send(conv, "from before").result(10)

    bob_term = _spawn(stack, bob)  # no --conv: bob picks from the list
    terminals.append(bob_term)
    bob_term.expect(f"1. {conv}")
    bob_term.expect(r"unread (-|\d+)")  # "-" until the API reports unread counts
    bob_term.expect("Open which conversation")
    bob_term.sendline("1")
    bob_term.expect(f"#1 {alice}: from before")  # history first
    bob_term.expect("--- live")

    alice_term = _spawn(stack, alice, "--conv", conv)
    terminals.append(alice_term)
    # bob's retained presence may be printed just before or just after the live marker
    seen = {alice_term.expect(["--- live", f"\\* {bob} is online"]) for _ in range(2)}
    assert seen == {0, 1}
    bob_term.expect(f"\\* {alice} is online")

    alice_term.sendline("hello bob")
    alice_term.expect(f"#2 {alice} \\(me\\): hello bob")
    alice_term.expect("✓ sent #2")
    bob_term.expect(f"#2 {alice}: hello bob")

    bob_term.sendline("hi alice")
    alice_term.expect(f"#3 {bob}: hi alice")
    bob_term.expect("✓ sent #3")

    bob_term.sendline("/quit")
    bob_term.expect("bye")
    bob_term.expect(pexpect.EOF)
    alice_term.expect(f"\\* {bob} is offline")
    alice_term.sendeof()  # Ctrl-D also quits
    alice_term.expect("bye")
    alice_term.expect(pexpect.EOF)
    alice_term.close()
    assert alice_term.exitstatus == 0

    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=stack.token(bob))
    assert status == 200
    assert [m["body"] for m in page["messages"]] == ["from before", "hello bob", "hi alice"]


def test_bad_password_is_a_clear_error(stack: Stack, unique: Callable[[str], str],
                                       terminals: list[pexpect.spawn]) -> None:
    user = unique("carl")
    stack.add_user(user)
    term = _spawn(stack, user, "--password-stdin")
    terminals.append(term)
    term.sendline("not the password")
    term.expect("login failed: invalid username or password")
    term.expect(pexpect.EOF)
    term.close()
    assert term.exitstatus == 1


def test_chat_uses_the_ports_chatmq_up_recorded(stack: Stack, unique: Callable[[str], str],
                                                terminals: list[pexpect.spawn]) -> None:
    """No --port or --http-url: the stack runs on free ports, recorded in its data dir's stack.json
    (the defaults, 1883 and 8080, would reach the machine's own Mosquitto or nothing)."""
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    term = _spawn(stack, alice, "--conv", conv, where=())
    terminals.append(term)
    term.expect("--- live")
    term.sendline("found you")
    term.expect(f"#1 {alice} \\(me\\): found you")
    term.expect("✓ sent #1")  # only the chatmq stack acks
    term.sendline("/quit")
    term.expect(pexpect.EOF)


def test_chat_says_when_the_connection_drops_and_sends_wait(
    stack: Stack, unique: Callable[[str], str], terminals: list[pexpect.spawn]
) -> None:
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    link = FlakyLink(stack.mqtt_port)
    try:
        # --port overrides what `chatmq up` recorded; the API still comes from the data dir
        term = _spawn(stack, alice, "--conv", conv, where=("--port", str(link.port)))
        terminals.append(term)
        term.expect("--- live")
        link.down()
        term.expect("--- connection lost; reconnecting")
        term.sendline("typed while offline")
        # the client library's ack_timeout (5 s here) reports it, at its next tick (up to 1 s later)
        term.expect("! not acked after [56] s \\(not connected; sent when the connection is back\\): "
                    "typed while offline")
        link.up()
        term.expect("--- connected again", timeout=40)  # paho's reconnect back-off
        term.expect("✓ sent #1")
        term.sendline("/quit")
        term.expect(pexpect.EOF)
    finally:
        link.close()
    screen = _screen(term)
    assert f"#1 {alice} (me): typed while offline" in screen.split("--- connected again")[1], screen
    assert "paho" not in screen and " INFO " not in screen and "Traceback" not in screen, screen


def test_chat_for_a_user_without_conversations(stack: Stack, unique: Callable[[str], str],
                                               terminals: list[pexpect.spawn]) -> None:
    loner = unique("loner")
    stack.add_user(loner)
    term = _spawn(stack, loner)
    terminals.append(term)
    term.expect(f"{loner} has no conversations yet")
    term.expect(pexpect.EOF)
    term.close()
    assert term.exitstatus == 1
    assert "Conversations:" not in _screen(term)


def test_chat_client_acknowledges_every_qos1_delivery(stack: Stack, unique: Callable[[str], str],
                                                      terminals: list[pexpect.spawn]) -> None:
    """The PUBACK path, client side, read on the wire: every QoS 1 PUBLISH the broker sends the
    `chatmq chat` client is PUBACKed, the retained presence delivered on SUBSCRIBE included (the
    broker's "Timeout waiting for PUBACK for packet ID 1" after a chat connects is not the client's)."""
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    tap = MqttTap()
    link = FlakyLink(stack.mqtt_port, tap=tap)
    try:
        # bob online (heartbeats within the stack's presence TTL): a retained presence/bob
        with stack.client(bob, device="phone", heartbeat_interval=1.0) as bob_phone:
            term = _spawn(stack, alice, "--conv", conv, where=("--port", str(link.port)))
            terminals.append(term)
            term.expect(f"\\* {bob} is online")
            bob_phone.send(conv, "a live message").result(10)
            term.expect(f"{bob}: a live message")
            term.sendline("and my own")
            term.expect("✓ sent #2")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                packets = tap.snapshot()
                delivered = {p.packet_id: p for p in packets if p.way == "down" and p.kind == 3 and p.qos == 1}
                acked = {p.packet_id for p in packets if p.way == "up" and p.kind == 4}
                if delivered and set(delivered) <= acked:
                    break
                time.sleep(0.1)
            term.sendline("/quit")
            term.expect(pexpect.EOF)
    finally:
        link.close()
    topics = {p.topic for p in delivered.values()}
    assert f"presence/{bob}" in topics and f"chat/{conv}/msg" in topics and f"user/{alice}/ack" in topics, topics
    assert any(p.retain for p in delivered.values() if p.topic == f"presence/{bob}")
    assert set(delivered) <= acked, f"never PUBACKed: {[delivered[i] for i in set(delivered) - acked]}"


def test_search_in_the_terminal(stack: Stack, unique: Callable[[str], str], terminals: list[pexpect.spawn]) -> None:
    alice, bob, conv, other = unique("alice"), unique("bob"), unique("conv"), unique("other")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    stack.create_conv(other, alice, bob)
    with stack.client(bob, device="old") as b:
        for n in range(12):
            b.send(other, f"kiwi number {n}").result(10)
        b.send(conv, "no fruit here").result(10)
    term = _spawn(stack, alice, "--conv", conv)
    terminals.append(term)
    term.expect("--- live")
    term.sendline("/search KIWI")
    term.expect(f"\\? \\[[-0-9: ]+\\] {other} #12 {bob}: kiwi number 11")  # newest first, where it is
    term.expect(f"#3 {bob}: kiwi number 2")
    term.expect("10 result\\(s\\) for: KIWI \\(older ones: /search more\\)")
    term.sendline("/search more")
    term.expect(f"#2 {bob}: kiwi number 1")
    term.expect(f"#1 {bob}: kiwi number 0")
    term.expect("2 result\\(s\\) for: KIWI \\(no more\\)")
    term.sendline("/search more")
    term.expect("nothing more: /search words first")
    term.sendline("/search banana")
    term.expect("\\? no messages with: banana")
    term.sendline('/search "*"')
    term.expect("search failed: q: needs at least one word")
    term.sendline("/quit")
    term.expect(pexpect.EOF)


def test_people_are_shown_by_their_display_names(stack: Stack, unique: Callable[[str], str],
                                                 terminals: list[pexpect.spawn]) -> None:
    alice, bob, carol, conv = unique("alice"), unique("bob"), unique("carol"), unique("conv")
    for user in (alice, bob, carol):
        stack.add_user(user)
    stack.create_conv(conv, alice, bob)
    for user, name in ((bob, "Bob Builder"), (carol, "Carol Cook")):
        assert stack.http("PATCH", "/v1/me", token=stack.token(user), body={"display_name": name})[0] == 200
    with stack.client(bob, device="old") as b:
        b.send(conv, "from before").result(10)

    term = _spawn(stack, alice, "--conv", conv)
    terminals.append(term)
    term.expect(f"members: {alice}, Bob Builder \\({bob}\\)")  # the list names the ids too
    term.expect("#1 Bob Builder: from before")
    term.expect("--- live")
    with stack.client(bob, device="phone") as b:
        term.expect("\\* Bob Builder is online")
        b.send(conv, "live one").result(10)
        term.expect("#2 Bob Builder: live one")
        b.react(conv, 2, "👍").result(10)
        term.expect("#2 reactions: 👍 Bob Builder")
    term.sendline("from alice")
    term.expect(f"#4 {alice} \\(me\\): from alice")  # no display name: the id
    term.expect("✓✓ read #4 \\(Bob Builder\\)|✓ sent #4")

    # someone who joined after the terminal started: named at their first message
    assert stack.admin("conv", "add-member", conv, carol).returncode == 0
    status, _ = stack.http("POST", f"/v1/conversations/{conv}/messages", token=stack.token(carol),
                           body={"client_msg_id": "carol-1", "body": "hello all"})
    assert status in (200, 201), status
    term.expect("#5 Carol Cook: hello all")
    term.sendline("/who")
    term.expect(f"\\* Bob Builder \\({bob}\\): (online|offline)")
    term.sendline("/quit")
    term.expect(pexpect.EOF)
