"""The web app as the browser tests see it: a page object over Playwright's page."""

from __future__ import annotations

import time
from typing import Any

from chatmq.cli.adminclient import AdminChannel, resolve
from chatmq.core.auth import hash_password
from chatmq.core.control import Command
from chatmq.core.store import open_store
from tests.stack import PASSWORD, Stack

HASHED_PASSWORD = hash_password(PASSWORD)


class ChatPage:
    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def open(self, query: str = "") -> ChatPage:
        self.page.goto(f"{self.base_url}/app/{query}")
        return self.rendered()

    def rendered(self) -> ChatPage:
        """The app is up: the sign-in form or the signed-in app. (Waits use selectors: the app's
        Content-Security-Policy forbids the eval behind Playwright's wait_for_function.)"""
        self.page.wait_for_selector("[data-testid=sign-in], .app")
        return self

    def signed_out(self) -> bool:
        return self.page.locator("[data-testid=sign-in]").count() > 0

    def sign_in(self, user: str, password: str = PASSWORD) -> ChatPage:
        self.page.fill("input[name=user]", user)
        self.page.fill("input[name=password]", password)
        self.page.click("[data-testid=sign-in] button[type=submit]")
        self.wait_online()
        return self

    def state(self) -> str:
        return str(self.page.evaluate("chatmq.snapshot.state"))

    def wait_online(self) -> None:
        self.page.wait_for_selector(".app[data-state=online]")

    def open_conversation(self, conv: str) -> ChatPage:
        self.page.click(f"[data-testid=conversation][data-conv='{conv}']")
        self.page.wait_for_selector(f"[data-testid=conversation-view][data-conv='{conv}']")
        self.page.wait_for_selector("[data-testid=messages] .start, [data-testid=load-older]")
        return self

    def send(self, text: str) -> None:
        self.page.fill("[data-testid=message-input]", text)
        self.page.click("[data-testid=send]")

    def wait_for_body(self, body: str) -> Any:
        locator = self.page.locator("[data-testid=message][data-seq]:not([data-seq=''])", has_text=body)
        locator.first.wait_for()
        return locator

    def shown(self) -> list[tuple[int, str]]:
        """(seq, body) of every stored message on screen, in screen order."""
        rows = self.page.eval_on_selector_all(
            "[data-testid=message]",
            "els => els.filter(e => e.dataset.seq)"
            "  .map(e => [Number(e.dataset.seq), e.querySelector('.body')?.textContent ?? ''])",
        )
        return [(int(seq), str(body)) for seq, body in rows]

    def conversation_item(self, conv: str) -> Any:
        return self.page.locator(f"[data-testid=conversation][data-conv='{conv}']")


def connections(stack: Stack, user: str) -> list[dict[str, Any]]:
    """The user's live MQTT connections, as the broker lists them (what `chatmq clients` asks)."""
    with AdminChannel(resolve(stack.data_dir, None, None)) as channel:
        return list(channel.request(Command.CLIENTS, {"user": user}))


def connection_ids(stack: Stack, user: str) -> list[tuple[str, int]]:
    """Which connections (client id, connected since): the same pair later is the same connection,
    never dropped and made again (subscription and queue counts move while it lives)."""
    return [(row["client_id"], row["connected_since"]) for row in connections(stack, user)]


def add_users_and_conversation(stack: Stack, users: list[str], conv: str, title: str | None = None) -> None:
    """Straight into the stack's store (what `chatmq user add` and `conv create` do, without a
    process start each): the running broker sees the membership within its refresh interval."""
    store = open_store(f"sqlite:///{stack.data_dir / 'chatmq.db'}")
    try:
        for user in users:
            if store.get_user(user) is None:
                store.create_user(user, HASHED_PASSWORD)
        store.create_conversation(conv, users, title=title)
    finally:
        store.close()


def eventually(check: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        time.sleep(interval)
