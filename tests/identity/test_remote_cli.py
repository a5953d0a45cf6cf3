"""The `chatmq` admin commands in remote mode (--server + an admin token) against a running stack,
from a machine that has no access to its data dir or store; and bulk provisioning of 10,000 users."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chatmq.core.auth import hash_password
from chatmq.core.provisioning import csv_text
from tests.ops.helpers import KICK_DEADLINE_S, Device
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def admin_token(stack: Stack) -> str:
    return stack.admin("token", "issue", "--admin").stdout.strip()


@pytest.fixture
def remote(stack: Stack, admin_token: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `chatmq ARGS` with only the server's URL and an admin token: no data dir of the stack,
    no store URL, no secret key, no Redis."""
    elsewhere = tmp_path / "operator-laptop"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMQ_")}
    env.update(CHATMQ_DATA_DIR=str(elsewhere), CHATMQ_SERVER=stack.base_url, CHATMQ_ADMIN_TOKEN=admin_token,
               CHATMQ_REDIS_URL="redis://127.0.0.1:1/0", CHATMQ_BROKER_PORT="1")

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "chatmq.cli", *args], env=env, input=stdin, cwd=elsewhere,
                                capture_output=True, text=True, timeout=240)
        if check and result.returncode != 0:
            raise AssertionError(f"chatmq {' '.join(args)} exited {result.returncode}: {result.stderr}")
        assert not list(elsewhere.iterdir()), "remote mode must not create local state"
        return result

    return run


def test_every_admin_command_works_remotely(stack: Stack, remote: Callable[..., subprocess.CompletedProcess[str]],
                                            unique: Callable[[str], str]) -> None:
    alice, bob, conv = unique("ralice"), unique("rbob"), unique("rconv")
    assert remote("user", "add", alice, "--password-stdin", stdin=PASSWORD + "\n").stdout == f"user {alice} created\n"
    remote("user", "add", bob, "--password-stdin", "--display-name", "Bob R", stdin=PASSWORD + "\n")
    duplicate = remote("user", "add", bob, "--no-password", check=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = {line.split("\t")[0]: line for line in remote("user", "list", "--page-size", "2").stdout.splitlines()}
    assert {alice, bob} <= set(listed) and listed[bob].endswith("\tBob R")
    assert "display name: Bob R" in remote("user", "show", bob).stdout
    assert "Bobby" in remote("user", "profile", bob, "--display-name", "Bobby").stdout

    assert remote("conv", "create", "--id", conv, "--members", f"{alice},{bob}").stdout.strip() == conv
    carol = unique("rcarol")
    remote("user", "add", carol, "--password-stdin", stdin=PASSWORD + "\n")
    remote("conv", "add-member", conv, carol)
    assert f"{alice}, {bob}, {carol}" in remote("conv", "show", conv).stdout
    remote("conv", "remove-member", conv, carol)
    assert any(line.startswith(f"{conv}\t") and "2 members" in line
               for line in remote("conv", "list", "--member", alice).stdout.splitlines())
    missing = remote("conv", "show", unique("nope"), check=False)
    assert missing.returncode == 1 and "unknown conversation" in missing.stderr

    device = Device(stack, alice, client_id=f"{alice}.phone")
    try:
        assert device.subscribe(f"user/{alice}/ack")
        device.send(conv, alice, "m1", "hello from afar")
        device.expect(f"user/{alice}/ack")
        history = [json.loads(line) for line in remote("history", conv, "--json").stdout.splitlines()]
        assert [m["body"] for m in history] == ["hello from afar"]
        assert "online" in remote("presence", alice).stdout or "offline" in remote("presence", alice).stdout
        rows = [json.loads(line) for line in remote("clients", "--json", "--user", alice).stdout.splitlines()]
        assert [row["client_id"] for row in rows] == [f"{alice}.phone"]
        stats = remote("stats").stdout
        assert "broker connections" in stats and "users" in stats
        assert "kicked 1 connection(s)" in remote("kick", alice).stdout
        assert device.closed.wait(KICK_DEADLINE_S)
    finally:
        device.close()

    token = remote("token", "issue", bob, "--ttl", "600").stdout.strip()
    assert stack.http("GET", "/v1/conversations", token=token)[0] == 200
    assert "revoked" in remote("token", "revoke", bob).stdout
    assert stack.http("GET", "/v1/conversations", token=token)[0] == 401

    assert "disabled" in remote("user", "disable", carol).stdout
    assert not Device(stack, carol).accepted
    assert "deleted" in remote("user", "delete", alice).stdout
    assert not Device(stack, alice).accepted


def test_a_users_token_or_none_is_refused(stack: Stack, remote: Callable[..., subprocess.CompletedProcess[str]],
                                          unique: Callable[[str], str]) -> None:
    dana = unique("rdana")
    stack.add_user(dana)
    refused = remote("user", "list", "--token", stack.token(dana), check=False)
    assert refused.returncode == 1 and "refused the admin token" in refused.stderr
    down = remote("user", "list", "--server", "http://127.0.0.1:1", check=False)
    assert down.returncode == 3 and "not reachable" in down.stderr


def test_bulk_import_of_10000_users_then_again(stack: Stack, remote: Callable[..., subprocess.CompletedProcess[str]],
                                               unique: Callable[[str], str], tmp_path: Path) -> None:
    prefix = unique("bulk")
    hashed = hash_password("bulk-password")  # one hash reused: argon2 is the importer's cost, not the test's
    rows: list[dict[str, object]] = []
    for n in range(10_000):
        row: dict[str, object] = {"id": f"{prefix}-{n:05d}", "display_name": f"Bulk {n}"}
        if n % 2:
            row["password_hash"] = hashed  # even rows: no password (identity provider logins)
        rows.append(row)
    rows.insert(17, {"id": "not a valid id"})
    rows.insert(4242, {"id": f"{prefix}-x", "password_hash": "plaintext?"})
    users = tmp_path / "users.jsonl"
    users.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{broken json\n")

    first = remote("user", "import", str(users), check=False)
    assert first.returncode == 1, first.stderr
    assert "users: 10000 created, 0 already there, 3 bad row(s)" in first.stdout
    assert "line 18: id 'not a valid id' is not a valid user id" in first.stderr
    assert "line 4243: password_hash is not an argon2 hash" in first.stderr
    assert "line 10003: not JSON" in first.stderr
    assert "importing 10000 users" in first.stderr  # the progress bar

    again = remote("user", "import", str(users), check=False)
    assert "users: 0 created, 10000 already there, 3 bad row(s)" in again.stdout

    one = f"{prefix}-00001"
    assert Device(stack, one, password="bulk-password").accepted
    assert not Device(stack, f"{prefix}-00002", password="").accepted  # no password: tokens only

    convs = tmp_path / "convs.csv"
    convs.write_text(csv_text([{"id": f"{prefix}-team", "title": "Team", "members": [one, f"{prefix}-00003"]},
                               {"id": f"{prefix}-bad", "title": "", "members": ["ghost-user"]}],
                              ("id", "title", "members")))
    made = remote("conv", "import", str(convs), check=False)
    assert "conversations: 1 created" in made.stdout and "line 3: unknown member(s) ghost-user" in made.stderr
    assert "0 created, 1 already there" in remote("conv", "import", str(convs), check=False).stdout


def test_webhook_and_push_commands_work_remotely(stack: Stack, remote: Callable[..., subprocess.CompletedProcess[str]],
                                                 unique: Callable[[str], str]) -> None:
    hook, alice, bob, conv = unique("rhook"), unique("whalice"), unique("whbob"), unique("whconv")
    added = remote("webhook", "add", hook, "http://127.0.0.1:1/hook", "--events", "message.created").stdout
    assert f"webhook {hook} -> http://127.0.0.1:1/hook for message.created\nsecret: " in added
    duplicate = remote("webhook", "add", hook, "http://127.0.0.1:1/hook", check=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    listed = remote("webhook", "list").stdout
    assert any(line.startswith(f"{hook}  http://127.0.0.1:1/hook  message.created  since ")
               for line in listed.splitlines()), listed
    secrets = remote("webhook", "list", "--show-secrets", check=False)
    assert secrets.returncode == 1 and "local store only" in secrets.stderr

    for user in (alice, bob):
        stack.add_user(user)
    stack.create_conv(conv, alice, bob)
    status, ack = stack.http("POST", f"/v1/conversations/{conv}/messages", token=stack.token(alice),
                             body={"client_msg_id": "w1", "body": "for the webhook"})
    assert status == 200, ack
    delivery = f"w:{hook}:m:{conv}:{ack['seq']}"
    deadline = time.monotonic() + 30
    while delivery not in (log := remote("webhook", "log", hook).stdout) and time.monotonic() < deadline:
        time.sleep(0.5)  # the notifier writes the delivery (the receiver is down: it retries)
    assert delivery in log and "message.created" in log
    rows = [json.loads(line) for line in remote("webhook", "log", hook, "--json").stdout.splitlines()]
    assert [(row["id"], row["channel"], row["target"]) for row in rows] == [(delivery, "webhook", hook)]
    assert remote("webhook", "dead", hook).stdout == "no deliveries\n"
    assert remote("webhook", "replay", delivery).stdout.startswith("1 webhook deliveries pending again")
    unknown = remote("webhook", "replay", "w:nope", check=False)
    assert unknown.returncode == 1 and "no webhook delivery w:nope" in unknown.stderr
    assert remote("webhook", "remove", hook).stdout == f"webhook {hook} removed\n"
    gone = remote("webhook", "remove", hook, check=False)
    assert gone.returncode == 1 and f"no webhook '{hook}'" in gone.stderr

    assert remote("push", "targets", bob).stdout == f"{bob} has no push targets\n"
    status, _ = stack.http("POST", "/v1/push/targets", token=stack.token(bob),
                           body={"device": "phone", "platform": "fcm", "token": "fcm-token-0123456789abcdef"})
    assert status in (200, 201)
    targets = remote("push", "targets", bob).stdout
    assert targets.startswith("phone  fcm  fcm-toke…abcdef  app=-  preview=on  registered "), targets
    nobody = remote("push", "targets", unique("nobody"), check=False)
    assert nobody.returncode == 1 and "unknown user" in nobody.stderr
    assert remote("push", "log", f"{bob}/phone").stdout == "no deliveries\n"  # push is off on this stack
