"""The operator commands against a real `chatmq up`: clients, kick, token issue/revoke, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import orjson
import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import ADMIN_USER, SERVICE_USER
from chatmq.core.control import REQUEST_TOPIC, RESPONSE_FILTER, Command, encode_request
from chatmq.core.netutil import free_port
from tests.ops.helpers import KICK_DEADLINE_S, Device
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(120)


def test_clients_lists_connected_devices(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob = unique("alice"), unique("bob")
    stack.add_user(alice)
    stack.add_user(bob)
    conv = unique("c")
    stack.create_conv(conv, alice, bob)
    device = Device(stack, alice, client_id=f"{alice}.phone")
    other = Device(stack, bob, client_id=f"{bob}.phone")
    try:
        assert device.subscribe(f"chat/{conv}/msg")
        rows = [json.loads(line) for line in stack.admin("clients", "--json").stdout.splitlines()]
        mine = {row["client_id"]: row for row in rows}
        assert {f"{alice}.phone", f"{bob}.phone", "chatmq-bridge"} <= set(mine)
        row = mine[f"{alice}.phone"]
        assert row["user"] == alice and row["address"].startswith("127.0.0.1:")
        assert row["keepalive_s"] == 30 and row["subscriptions"] == 1 and row["queued"] == 0
        assert row["connected_since"] > 0

        assert not [client for client in mine if client.startswith("chatmq-admin-")]  # the command's own
        only = stack.admin("clients", "--user", alice).stdout.splitlines()
        assert only[0].split() == ["CLIENT_ID", "USER", "ADDRESS", "SINCE", "KEEPALIVE", "SUBS", "QUEUED"]
        assert len(only) == 2 and only[1].split()[:2] == [f"{alice}.phone", alice]
        every = stack.admin("clients").stdout.splitlines()
        assert "chatmq-admin-" not in "\n".join(every) and "\t" not in "\n".join(every)
        for heading in ("USER", "ADDRESS", "QUEUED"):  # each column starts at one offset on every line
            at = every[0].index(heading)
            assert all(line[at - 2:at] == "  " and line[at] != " " for line in every[1:]), every
    finally:
        device.close()
        other.close()


def test_kick_user_closes_all_its_devices(stack: Stack, unique: Callable[[str], str]) -> None:
    carol, dave = unique("carol"), unique("dave")
    stack.add_user(carol)
    stack.add_user(dave)
    phone, laptop, bystander = Device(stack, carol), Device(stack, carol), Device(stack, dave)
    try:
        result = stack.admin("kick", carol)
        assert "kicked 2 connection(s)" in result.stdout
        assert phone.closed.wait(KICK_DEADLINE_S) and laptop.closed.wait(KICK_DEADLINE_S)
        assert not bystander.closed.is_set()
        again = Device(stack, carol)  # not disabled: the device may come back
        assert again.accepted
        again.close()
    finally:
        for device in (phone, laptop, bystander):
            device.close()


def test_kick_one_client_and_unknown_ids(stack: Stack, unique: Callable[[str], str]) -> None:
    erin = unique("erin")
    stack.add_user(erin)
    phone, tablet = Device(stack, erin, client_id=f"{erin}.phone"), Device(stack, erin, client_id=f"{erin}.tab")
    try:
        assert "kicked 1 connection(s)" in stack.admin("kick", "--client", f"{erin}.tab").stdout
        assert tablet.closed.wait(KICK_DEADLINE_S)
        assert not phone.closed.wait(0.3)

        missing = stack.admin("kick", "--client", "nobody.here", check=False)
        assert missing.returncode == 1 and "unknown client id 'nobody.here'" in missing.stderr
        stranger = stack.admin("kick", unique("ghost"), check=False)
        assert stranger.returncode == 1 and "unknown user" in stranger.stderr
        usage = stack.admin("kick", check=False)
        assert usage.returncode == 2 and "exactly one of USER or --client" in usage.stderr
    finally:
        phone.close()
        tablet.close()


def test_kick_disable_keeps_the_user_out(stack: Stack, unique: Callable[[str], str]) -> None:
    frank = unique("frank")
    stack.add_user(frank)
    device = Device(stack, frank)
    try:
        assert "disabled" in stack.admin("kick", frank, "--disable").stdout
        assert device.closed.wait(KICK_DEADLINE_S)
        assert not Device(stack, frank).accepted
    finally:
        device.close()


def test_token_issue_gives_a_working_token(stack: Stack, unique: Callable[[str], str]) -> None:
    gina = unique("gina")
    stack.add_user(gina)
    token = stack.admin("token", "issue", gina, "--ttl", "600").stdout.strip()
    assert stack.http("GET", "/v1/conversations", token=token)[0] == 200
    device = Device(stack, gina, password=token)
    assert device.accepted
    device.close()
    unknown = stack.admin("token", "issue", unique("nobody"), check=False)
    assert unknown.returncode == 1 and "unknown user" in unknown.stderr


def test_token_revoke_closes_live_connections_and_refuses_the_token(
    stack: Stack, unique: Callable[[str], str]
) -> None:
    hank = unique("hank")
    stack.add_user(hank)
    token = stack.token(hank)
    with_token = Device(stack, hank, password=token)
    with_password = Device(stack, hank)
    assert with_token.accepted and with_password.accepted
    try:
        assert "revoked" in stack.admin("token", "revoke", hank).stdout
        assert with_token.closed.wait(KICK_DEADLINE_S), "a revoked token's live connection must be closed"
        assert not with_password.closed.wait(0.5), "a password login is not affected by a token revoke"
        assert not Device(stack, hank, password=token).accepted
        assert stack.http("GET", "/v1/conversations", token=token)[0] == 401
        fresh = stack.token(hank)  # issued after the revoke: valid
        assert stack.http("GET", "/v1/conversations", token=fresh)[0] == 200
    finally:
        with_token.close()
        with_password.close()


def test_token_revoke_of_one_token(stack: Stack, unique: Callable[[str], str]) -> None:
    ivy = unique("ivy")
    stack.add_user(ivy)
    first, second = stack.token(ivy), stack.token(ivy)
    on_first, on_second = Device(stack, ivy, password=first), Device(stack, ivy, password=second)
    try:
        assert "revoked" in stack.admin("token", "revoke", "--token", first).stdout
        assert on_first.closed.wait(KICK_DEADLINE_S)
        assert not on_second.closed.wait(0.5)
        assert stack.http("GET", "/v1/conversations", token=first)[0] == 401
        assert stack.http("GET", "/v1/conversations", token=second)[0] == 200
        forged = stack.admin("token", "revoke", "--token", "eyJ.not.valid", check=False)
        assert forged.returncode == 1 and "not a valid token" in forged.stderr
    finally:
        on_first.close()
        on_second.close()


def test_user_disable_closes_live_connections(stack: Stack, unique: Callable[[str], str]) -> None:
    jane = unique("jane")
    stack.add_user(jane)
    token = stack.token(jane)
    by_password, by_token = Device(stack, jane), Device(stack, jane, password=token)
    try:
        stack.admin("user", "disable", jane)
        assert by_password.closed.wait(KICK_DEADLINE_S) and by_token.closed.wait(KICK_DEADLINE_S)
        assert stack.http("GET", "/v1/conversations", token=token)[0] == 401
    finally:
        by_password.close()
        by_token.close()


def test_the_admin_channel_refuses_everyone_but_the_admin(stack: Stack, unique: Callable[[str], str]) -> None:
    mallory = unique("mallory")
    stack.add_user(mallory)
    device = Device(stack, mallory)
    try:
        assert not device.subscribe(RESPONSE_FILTER)
        assert not device.subscribe("$CONTROL/#")
        device.publish(REQUEST_TOPIC, encode_request("r1", Command.KICK, {"user": mallory}))
        device.publish(REQUEST_TOPIC, encode_request("r2", Command.CLIENTS))
        assert not device.closed.wait(0.5), "a device's admin request must do nothing"
        assert device.received.empty()
    finally:
        device.close()

    secret = (stack.data_dir / "secret.key").read_text().strip()
    user_token = stack.token(mallory)
    assert not Device(stack, ADMIN_USER, password=user_token).accepted
    admin_token = issue_token(secret, ADMIN_USER, 60, admin=True).token
    assert not Device(stack, mallory, password=admin_token).accepted, "an admin token is no user's token"
    assert not Device(stack, ADMIN_USER, password=PASSWORD).accepted, "the admin has no password"
    assert stack.http("GET", "/v1/conversations", token=admin_token)[0] == 401
    service_as_admin = issue_token(secret, SERVICE_USER, 60, service=True).token
    assert not Device(stack, ADMIN_USER, password=service_as_admin).accepted


def test_commands_refused_with_another_deployments_key(stack: Stack) -> None:
    env = {**stack.env(), "CHATMQ_SECRET_KEY": "not-the-key-of-this-stack", "CHATMQ_BROKER_PORT": str(stack.mqtt_port)}
    result = subprocess.run([sys.executable, "-m", "chatmq.cli", "clients"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and "refused the admin identity" in result.stderr


def test_clear_error_when_the_stack_is_not_running(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
    env.update(CHATMQ_DATA_DIR=str(tmp_path), CHATMQ_BROKER_PORT=str(free_port()))
    for args in (["clients"], ["stats"], ["kick", "--client", "x"], ["tail", "--all"]):
        result = subprocess.run([sys.executable, "-m", "chatmq.cli", *args], env=env, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 3, (args, result.stderr)
        assert "not reachable" in result.stderr and "chatmq up" in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["clients", "kick", "tail", "stats", "token", "export", "import", "export-conv",
                                     "import-conv", "backup", "restore"])
def test_every_command_has_help(stack: Stack, command: str) -> None:
    result = stack.admin(command, "--help")
    assert "Usage: chatmq" in result.stdout and command in result.stdout


def test_admin_requests_answer_bad_arguments(stack: Stack) -> None:
    """The channel's own errors, through the client library: a bad request gets a coded answer."""
    from chatmq.cli.adminclient import AdminChannel, RequestFailed, resolve

    target = resolve(stack.data_dir, "127.0.0.1", stack.mqtt_port)
    with AdminChannel(target) as channel:
        with pytest.raises(RequestFailed) as bad:
            channel.request(Command.KICK, {"user": "x", "client_id": "y"})
        assert bad.value.code == "bad_request"
        with pytest.raises(RequestFailed) as missing:
            channel.request(Command.KICK, {"client_id": "nope"})
        assert missing.value.code == "unknown_client"
        stats = channel.request(Command.STATS)
        assert stats["connections"] >= 2 and set(stats) >= {"in_per_s", "out_per_s", "queued", "sessions"}
    assert orjson.dumps(stats)


def test_membership_changes_that_change_nothing_say_so(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, carol, conv = unique("alice"), unique("bob"), unique("carol"), unique("c")
    for user in (alice, bob, carol):
        stack.add_user(user)
    stack.create_conv(conv, alice, bob)
    again = stack.admin("conv", "add-member", conv, bob, check=False)
    assert again.returncode == 1 and f"{bob} is already a member of {conv}" in again.stderr
    assert "added" not in again.stdout
    absent = stack.admin("conv", "remove-member", conv, carol, check=False)
    assert absent.returncode == 1 and f"{carol} is not a member of {conv}" in absent.stderr
    assert "removed" not in absent.stdout
    assert f"members:  {alice}, {bob}" in stack.admin("conv", "show", conv).stdout


def test_presence_of_several_users(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob = unique("alice"), unique("bob")
    stack.add_user(alice)
    stack.add_user(bob)
    with stack.client(alice, heartbeat_interval=1.0):
        lines = stack.admin("presence", alice, bob).stdout.splitlines()
    assert lines[0].split() == ["USER", "STATUS", "LAST_SEEN"]
    assert lines[1].split()[:2] == [alice, "online"] and lines[2].split() == [bob, "offline", "never"]
    at = lines[0].index("STATUS")
    assert lines[1][at:].startswith("online") and lines[2][at:].startswith("offline")
    unknown = stack.admin("presence", alice, unique("nobody"), check=False)
    assert unknown.returncode == 1 and "unknown user" in unknown.stderr and unknown.stdout == ""
