"""Two people chatting in `chatmq chat` inside tmux, as they would in two terminal windows: every
keystroke goes through tmux's send-keys and every check reads what tmux shows on the screen. An
edit, a deletion, a reaction and a read receipt made on one side appear on the other."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.clients.test_library import _setup
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(180)  # tmux comes from scripts/ensure-deps (make install)


class Tmux:
    """A private tmux server (its own socket), one window per chat."""

    def __init__(self) -> None:
        self.socket = f"chatmq-test-{uuid.uuid4().hex[:10]}"

    def run(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        if result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {result.stderr}")
        return result.stdout

    def open(self, name: str, command: list[str], env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        shell = f"env {exports} {shlex.join(command)}; echo '[exited]'; sleep 600"
        if name == "first":
            self.run("new-session", "-d", "-s", "chat", "-n", name, "-x", "160", "-y", "60", shell)
        else:
            self.run("new-window", "-t", "chat", "-n", name, shell)

    def type(self, window: str, text: str) -> None:
        self.run("send-keys", "-t", f"chat:{window}", "-l", text)
        self.run("send-keys", "-t", f"chat:{window}", "Enter")

    def screen(self, window: str) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", f"chat:{window}", "-S", "-500")

    def wait(self, window: str, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.screen(window), re.M)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never showed in {window}:\n{self.screen(window)}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    yield server
    server.close()


def test_edit_delete_reaction_and_read_receipt_cross_over(
    stack: Stack, unique: Callable[[str], str], tmux: Tmux
) -> None:
    alice, bob, conv = _setup(stack, unique)
    with stack.client(alice, device="old") as a:
        a.send(conv, "from before").result(10)

    env = {**{k: v for k, v in stack.env().items() if k in ("PATH", "HOME")}, "CHATMQ_PASSWORD": PASSWORD,
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    for window, user in (("first", alice), ("second", bob)):
        tmux.open(window, [sys.executable, "-m", "chatmq.cli.chat", "--user", user, "--port", str(stack.mqtt_port),
                           "--http-url", stack.base_url, "--heartbeat", "1"], env)
    tmux.wait("second", rf"1\. {conv} .*unread 1")  # bob has not read "from before" yet
    tmux.wait("second", r"Open which conversation")
    tmux.type("second", "1")
    tmux.wait("second", "--- live")
    tmux.wait("first", r"Open which conversation")
    tmux.type("first", conv)
    tmux.wait("first", "--- live")

    tmux.type("first", "helo bob")
    tmux.wait("first", r"✓ sent #2")
    tmux.wait("second", rf"#2 {alice}: helo bob")
    tmux.wait("first", rf"✓✓ read #2 \({bob}\)")  # bob's terminal showed it: read

    tmux.type("first", "/edit 2 hello bob")
    tmux.wait("second", rf"#2 {alice} \(edited\): hello bob")
    tmux.type("second", "/react 2 👍")
    tmux.wait("first", rf"#2 reactions: 👍 {bob}")
    tmux.type("second", "/reply 2 hi alice")
    tmux.wait("first", rf"#5 {bob} ↪ #2: hi alice")
    tmux.type("first", "/delete 2")
    tmux.wait("second", rf"#2 \[deleted\] by {alice}")
    tmux.type("second", "/edit 2 not mine anyway")
    tmux.wait("second", r"! rejected \(target_deleted\)")

    tmux.type("first", "/quit")
    tmux.wait("first", r"^bye")
    tmux.type("second", "/quit")
    tmux.wait("second", r"^bye")

    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?view=messages", token=stack.token(bob))
    assert status == 200
    assert [(m["seq"], m["body"], bool(m["deleted"])) for m in page["messages"]] == [
        (1, "from before", False), (2, "", True), (5, "hi alice", False)]
