"""``chatmq chat`` driven through pseudo-terminals, as a person would use it over ssh."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pexpect
import pytest

from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(120)


def _spawn(stack: Stack, user: str, *args: str) -> pexpect.spawn:
    env = {**stack.env(), "CHATMQ_PASSWORD": PASSWORD, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    command = ["-m", "chatmq.chat", "--user", user, "--port", str(stack.mqtt_port),
               "--http-url", stack.base_url, *args]  # fmt: skip
    return pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=20)


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
    alice_term.expect("✓ received #2")
    bob_term.expect(f"#2 {alice}: hello bob")

    bob_term.sendline("hi alice")
    alice_term.expect(f"#3 {bob}: hi alice")
    bob_term.expect("✓ received #3")

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
