"""Removing a member is exact on chatmq's broker: once the API's DELETE (or the operator's `chatmq
conv remove-member`, local or remote) has returned, nothing said afterwards reaches the removed
member's live subscriptions: no message, no receipt, no typing.

The scenario of the report that found the leak (a message seen 0.00 s after the removal returned),
repeated: each round the owner removes carol over HTTP and, at once, alice sends, bob sends a
receipt and alice types; carol, still subscribed, must see none of it, and her
``conversation_removed`` event must not come after anything she should not have seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.e2e.helpers import raw
from tests.stack import RawClient, Stack

pytestmark = pytest.mark.timeout(240)

ROUNDS = 25
CLI_ROUNDS = 8  # a command is a process start each (~1 s); typing leaked in most rounds before


def _drain(client: RawClient) -> list[tuple[str, bytes]]:
    out = []
    while True:
        try:
            out.append(client.received.get_nowait())
        except queue.Empty:
            return out


def test_nothing_said_after_the_removal_returned_reaches_the_removed_member(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    def over_http(conv: str, carol: str, owner_token: str) -> None:
        status, _ = stack.http("DELETE", f"/v1/conversations/{conv}/members/{carol}", token=owner_token)
        assert status == 204

    _removals(stack, unique, ROUNDS, over_http)


@pytest.mark.parametrize("where", ["local", "remote"])
def test_nothing_said_after_the_remove_member_command_returned_reaches_the_removed_member(
    stack: Stack, unique: Callable[[str], str], where: str
) -> None:
    """`chatmq conv remove-member` on the stack's data dir (the store and Redis directly), and with
    --server (the admin API): both wait, as the API's DELETE does, until the brokers enforce it."""
    env = stack.env()
    if where == "remote":
        admin_token = stack.admin("token", "issue", "--admin").stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
        env.update(CHATMQ_SERVER=stack.base_url, CHATMQ_ADMIN_TOKEN=admin_token)

    def by_command(conv: str, carol: str, _owner_token: str) -> None:
        done = subprocess.run([sys.executable, "-m", "chatmq.cli", "conv", "remove-member", conv, carol], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr

    _removals(stack, unique, CLI_ROUNDS, by_command)


def _removals(stack: Stack, unique: Callable[[str], str], rounds: int,
              remove: Callable[[str, str, str], None]) -> None:  # fmt: skip
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    for name in (alice, bob, carol):
        stack.add_user(name)
    owner_token = stack.token(alice)
    a = raw(stack, alice, f"user/{alice}/ack")
    b = raw(stack, bob, f"user/{bob}/events")
    leaks: list[str] = []
    try:
        for n in range(rounds):
            status, made = stack.http("POST", "/v1/conversations", token=owner_token,
                                      body={"members": [bob, carol], "title": f"round {n}"})  # fmt: skip
            assert status == 201, made
            conv = made["id"]
            c = raw(stack, carol, f"chat/{conv}/msg", f"chat/{conv}/receipts", f"chat/{conv}/typing/+",
                    f"user/{carol}/events")  # fmt: skip
            try:
                before = json.dumps({"client_msg_id": f"before-{n}", "body": "hi"}).encode()
                a.publish(f"chat/{conv}/send/{alice}", before)
                seq = json.loads(a.expect(f"user/{alice}/ack"))["seq"]
                assert json.loads(c.expect(f"chat/{conv}/msg"))["seq"] == seq  # carol is live and subscribed
                remove(conv, carol, owner_token)
                # at once, from three directions
                a.client.publish(f"chat/{conv}/typing/{alice}", b'{"typing": true}', qos=0)
                a.client.publish(f"chat/{conv}/send/{alice}",
                                 json.dumps({"client_msg_id": f"after-{n}", "body": "about carol"}).encode(), qos=1)
                receipt = json.dumps({"seq": seq, "status": "read"}).encode()
                b.client.publish(f"chat/{conv}/receipt/{bob}", receipt, qos=1)
                ack = json.loads(a.expect(f"user/{alice}/ack"))
                assert ack["status"] == "received" and ack["seq"] == seq + 1
                deadline = time.monotonic() + 3.0  # the removal event comes within the refresh interval
                seen: list[tuple[str, bytes]] = []
                while not any(t == f"user/{carol}/events" and b"conversation_removed" in p for t, p in seen):
                    assert time.monotonic() < deadline, f"round {n}: no conversation_removed; saw {seen}"
                    with contextlib.suppress(queue.Empty):
                        seen.append(c.received.get(timeout=0.1))
                time.sleep(0.5)  # anything late would show now
                seen += _drain(c)
                for topic, payload in seen:
                    if topic.startswith(f"chat/{conv}/"):
                        leaks.append(f"round {n}: carol got {topic} {payload[:80]!r}")
            finally:
                c.close()
        assert leaks == []
    finally:
        a.close()
        b.close()
