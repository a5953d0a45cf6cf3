"""The web app in a real browser (headless Chromium) against a real stack: the scenarios of the
web client's contract. Each test uses its own users, so they share one stack per module."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clients.proxy import FlakyLink, http_route
from tests.stack import Stack
from tests.web.app import ChatPage, add_users_and_conversation, connection_ids, connections, eventually

pytestmark = pytest.mark.timeout(120)

MESSAGE = "[data-testid=message]"


@pytest.fixture
def pair(stack: Stack, unique: Callable[[str], str]) -> tuple[str, str, str]:
    alice, bob, conv = unique("alice"), unique("bob"), unique("team")
    add_users_and_conversation(stack, [alice, bob], conv)
    return alice, bob, conv


def history(stack: Stack, user: str, conv: str) -> list[dict[str, Any]]:
    status, body = stack.http("GET", f"/v1/conversations/{conv}/messages?limit=200", token=stack.token(user))
    assert status == 200, body
    return list(body["messages"])


def png(width: int = 24, height: int = 16) -> bytes:
    """A real (decodable) PNG: a blue rectangle."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x2a\x7d\xe1" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_two_users_chat_in_two_browsers(stack: Stack, app: Callable[..., ChatPage], pair: tuple[str, str, str],
                                        screenshots: Path) -> None:
    alice_id, bob_id, conv = pair
    status, _ = stack.http("PATCH", "/v1/me", token=stack.token(bob_id), body={"display_name": "Bob Builder"})
    assert status == 200
    alice, bob = app(alice_id), app(bob_id)
    alice.open_conversation(conv)
    alice.page.wait_for_selector(f"[data-testid=member][data-user='{bob_id}'][data-presence=online]")
    alice.page.locator("[data-testid=conversation-title]", has_text="Bob Builder").wait_for()  # his display name

    alice.send("hello bob")
    mine = alice.wait_for_body("hello bob")
    # bob has not opened the conversation: the list shows it unread, with its last message
    item = bob.conversation_item(conv)
    item.locator("[data-testid=unread]", has_text="1").wait_for()
    assert "hello bob" in item.inner_text()
    # bob's browser got it (a delivered receipt): ✓✓ for alice
    mine.locator("[data-testid=status][title=delivered]").wait_for()

    bob.open_conversation(conv)
    bob.wait_for_body("hello bob")
    item.locator("[data-testid=unread]").wait_for(state="detached")
    mine.locator("[data-testid=status][title=read]").wait_for()  # bob read it: ✓✓ in colour

    bob.page.type("[data-testid=message-input]", "hi al")
    alice.page.locator("[data-testid=typing]", has_text="Bob Builder is typing").wait_for()
    bob.page.fill("[data-testid=message-input]", "hi alice, got it")
    bob.page.click("[data-testid=send]")
    reply = alice.wait_for_body("hi alice, got it")
    assert reply.locator(".sender").inner_text() == "Bob Builder"
    alice.page.locator("[data-testid=typing]", has_text="typing").wait_for(state="detached")
    assert alice.shown() == [(1, "hello bob"), (2, "hi alice, got it")]
    assert bob.shown() == [(1, "hello bob"), (2, "hi alice, got it")]

    # a conversation created meanwhile appears live (user/{me}/events), with its unread message
    weekend = f"{conv}-weekend"
    add_users_and_conversation(stack, [alice_id, bob_id], weekend, title="Weekend plans")
    alice.conversation_item(weekend).wait_for()
    with stack.client(bob_id, device="phone") as phone:
        phone.join(weekend)
        phone.send(weekend, "hiking on Saturday?").result(timeout=10)
    alice.conversation_item(weekend).locator("[data-testid=unread]", has_text="1").wait_for()
    assert "hiking on Saturday?" in alice.conversation_item(weekend).inner_text()
    alice.page.screenshot(path=str(screenshots / "web-app.png"))
    assert alice.errors == [] and bob.errors == []


def test_two_tabs_of_one_user_share_one_connection(stack: Stack, app: Callable[..., ChatPage],
                                                   pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    first = app(alice_id)
    second = app(context=first.page.context)  # another tab of the same browser: already signed in
    second.wait_online()
    assert first.page.evaluate("chatmq.mode") == second.page.evaluate("chatmq.mode") == "shared"
    (connection,) = connection_ids(stack, alice_id)

    first.open_conversation(conv)
    second.open_conversation(conv)
    with stack.client(bob_id, device="phone") as bob:
        bob.send(conv, "to both tabs").result(timeout=10)
    first.wait_for_body("to both tabs")
    second.wait_for_body("to both tabs")
    first.send("from the first tab")
    second.wait_for_body("from the first tab")
    first.wait_for_body("from the first tab")
    assert first.shown() == second.shown() == [(1, "to both tabs"), (2, "from the first tab")]
    assert connection_ids(stack, alice_id) == [connection], "still the one connection"

    first.send("x" * 5000)  # over the body limit: refused by the library, never queued
    first.page.locator(".composer [role=alert]", has_text="at most 4096").wait_for()
    assert first.page.evaluate("chatmq.snapshot.outbox") == []
    assert connection_ids(stack, alice_id) == [connection]


def test_closing_one_tab_keeps_the_other_live(stack: Stack, app: Callable[..., ChatPage],
                                              pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    first = app(alice_id)
    second = app(context=first.page.context)
    second.wait_online()
    second.open_conversation(conv)
    (connection,) = connection_ids(stack, alice_id)

    first.page.close()
    with stack.client(bob_id, device="phone") as bob:
        bob.send(conv, "after the first tab closed").result(timeout=10)
        second.wait_for_body("after the first tab closed")
        assert second.state() == "online"
        assert connection_ids(stack, alice_id) == [connection], "the same connection, never dropped"
        second.send("the second tab still sends")
        second.wait_for_body("the second tab still sends")

        # the last tab closing ends the connection (cleanly: alice is offline at once, not after a TTL)
        second.page.close()
        eventually(lambda: connections(stack, alice_id) == [])
        token = stack.token(bob_id)
        eventually(lambda: stack.http("GET", f"/v1/presence/{alice_id}", token=token)[1]["status"] == "offline", 5)


def _through(link: FlakyLink, context: Any) -> None:
    """Let this browser reach the broker only through ``link`` (the app reads the URL from config.json)."""
    def config(route: Any) -> None:
        body = route.fetch().json()
        body["ws_url"] = f"ws://127.0.0.1:{link.port}/mqtt"
        route.fulfill(json=body)
    context.route("**/app/config.json", config)


def test_offline_send_then_online_delivers_once(stack: Stack, app: Callable[..., ChatPage], new_context: Any,
                                                pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    link = FlakyLink(stack.ws_port)
    try:
        context = new_context()
        _through(link, context)
        alice = app(alice_id, context=context)
        alice.open_conversation(conv)

        context.set_offline(True)  # the page hears the network is gone...
        link.down()  # ...and the connection really is (the SharedWorker's socket is cut)
        alice.page.locator("[data-testid=banner]", has_text="Connection lost").wait_for()
        alice.send("written on the train")
        pending = alice.page.locator(f"{MESSAGE}[data-status=pending]", has_text="written on the train")
        pending.wait_for()
        assert [m["body"] for m in history(stack, bob_id, conv)] == []

        link.up()
        context.set_offline(False)  # the 'online' event: the app reconnects at once
        alice.wait_for_body("written on the train")
        alice.page.locator("[data-testid=banner]", has_text="Back online").wait_for()
        eventually(lambda: [m["body"] for m in history(stack, bob_id, conv)] == ["written on the train"])
        assert alice.shown() == [(1, "written on the train")]
        assert pending.count() == 0
    finally:
        link.close()


def test_reload_keeps_an_unsent_message_and_sends_it(stack: Stack, app: Callable[..., ChatPage], new_context: Any,
                                                     pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    link = FlakyLink(stack.ws_port)
    try:
        context = new_context()
        _through(link, context)
        alice = app(alice_id, context=context)
        alice.open_conversation(conv)
        link.down()
        alice.page.locator("[data-testid=banner]", has_text="Connection lost").wait_for()
        alice.send("survives a reload")
        alice.page.locator(f"{MESSAGE}[data-status=pending]", has_text="survives a reload").wait_for()

        alice.page.reload()
        alice.rendered()
        alice.open_conversation(conv)
        kept = alice.page.locator(f"{MESSAGE}[data-status=pending]", has_text="survives a reload")
        kept.wait_for()  # still in the outbox (IndexedDB), still unsent
        assert history(stack, bob_id, conv) == []
        queued = alice.page.evaluate("chatmq.snapshot.outbox")
        assert [item["payload"]["body"] for item in queued] == ["survives a reload"]

        link.up()  # the worker's back-off reconnects and sends it with the same client_msg_id
        alice.page.locator(MESSAGE, has_text="survives a reload").and_(
            alice.page.locator("[data-seq='1']")).wait_for(timeout=30_000)
        stored = history(stack, bob_id, conv)
        assert [(m["body"], m["client_msg_id"]) for m in stored] == [("survives a reload", queued[0]["client_msg_id"])]
        assert alice.shown() == [(1, "survives a reload")]
    finally:
        link.close()


def test_what_arrives_before_the_app_listens_is_shown(stack: Stack, app: Callable[..., ChatPage], new_context: Any,
                                                    pair: tuple[str, str, str]) -> None:
    """The app listens to the client in an effect, which runs only after the first paint; the worker's
    first answers (the list) often come in between. Held open here with the page's clock paused (no
    timer, no animation frame runs, so no effect), and with the broker out of reach no later event
    comes to re-render: the list must show from what came meanwhile."""
    alice_id, _, conv = pair
    link = FlakyLink(stack.ws_port)
    try:
        context = new_context()
        _through(link, context)
        alice = app(alice_id, context=context)
        alice.open_conversation(conv)
        link.down()
        alice.page.locator("[data-testid=banner]", has_text="Connection lost").wait_for()

        alice.page.clock.install()
        alice.page.clock.pause_at(time.time() + 3600)
        alice.page.reload()
        alice.rendered()
        assert eventually(lambda: alice.page.evaluate("chatmq.snapshot.listing.loaded"))  # in the snapshot...
        assert alice.page.locator("[data-testid=conversation]").count() == 0  # ...not on screen yet
        alice.page.clock.resume()
        alice.page.locator(f"[data-testid=conversation][data-conv='{conv}']").wait_for(timeout=5_000)
    finally:
        link.close()


def test_without_shared_worker_each_tab_has_its_own_connection(stack: Stack, app: Callable[..., ChatPage],
                                                              new_context: Any, pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    context = new_context()
    context.add_init_script("delete globalThis.SharedWorker")
    first = app(alice_id, context=context)
    second = app(context=context)
    second.wait_online()
    assert first.page.evaluate("chatmq.mode") == second.page.evaluate("chatmq.mode") == "tab"
    both = eventually(lambda: len(connections(stack, alice_id)) == 2 and connections(stack, alice_id))
    assert len({c["client_id"] for c in both}) == 2
    first.open_conversation(conv)
    second.open_conversation(conv)
    with stack.client(bob_id, device="phone") as bob:
        bob.send(conv, "each tab hears it").result(timeout=10)
    first.wait_for_body("each tab hears it")
    second.wait_for_body("each tab hears it")


def test_scroll_back_walks_history_by_cursor(stack: Stack, app: Callable[..., ChatPage],
                                             pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    with stack.client(bob_id, device="phone") as bob:
        for n in range(1, 121):
            bob.send(conv, f"message {n}")
        assert bob.drain(30)
    alice = app(alice_id)
    alice.open_conversation(conv)
    alice.wait_for_body("message 120")
    assert len(alice.shown()) == 50
    messages = alice.page.locator("[data-testid=messages]")
    while alice.page.locator("[data-testid=messages] .start").count() == 0:
        messages.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        alice.page.wait_for_timeout(100)
    eventually(lambda: len(alice.shown()) == 120, 10)
    assert alice.shown() == [(n, f"message {n}") for n in range(1, 121)]


def test_image_and_file_upload_with_preview(stack: Stack, app: Callable[..., ChatPage],
                                            pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    alice, bob = app(alice_id), app(bob_id)
    alice.open_conversation(conv)
    bob.open_conversation(conv)
    alice.page.set_input_files("[data-testid=file-input]", files=[
        {"name": "blue.png", "mimeType": "image/png", "buffer": png()},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"plain text notes\n"},
    ])
    previews = alice.page.locator("[data-testid=previews]")
    previews.locator("img[alt='blue.png']").wait_for()
    assert "notes.txt" in previews.inner_text()
    alice.send("a picture and a file")
    alice.wait_for_body("a picture and a file")

    received = bob.wait_for_body("a picture and a file")
    image = received.locator("[data-testid=attachment-image]")
    image.wait_for()
    eventually(lambda: image.evaluate("img => img.complete && img.naturalWidth") == 24, 10)
    assert "notes.txt" in received.locator("button[data-testid=attachment]").inner_text()
    (stored,) = history(stack, bob_id, conv)
    attached = [(a["mime"], a["name"]) for a in stored["attachments"]]
    assert attached == [("image/png", "blue.png"), ("text/plain", "notes.txt")]


def test_phone_sized_screen_shows_one_pane_at_a_time(stack: Stack, app: Callable[..., ChatPage],
                                                     pair: tuple[str, str, str], screenshots: Path) -> None:
    alice_id, bob_id, conv = pair
    with stack.client(bob_id, device="phone") as bob:
        bob.send(conv, "on the phone?").result(timeout=10)
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
    alice = app(alice_id, **phone)
    sidebar, main = alice.page.locator(".sidebar"), alice.page.locator(".main")
    alice.conversation_item(conv).wait_for()
    assert sidebar.is_visible() and not main.is_visible()
    alice.open_conversation(conv)
    alice.wait_for_body("on the phone?")
    assert main.is_visible() and not sidebar.is_visible()
    alice.send("yes, on the phone")
    alice.wait_for_body("yes, on the phone")
    width = alice.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width} px)"
    alice.page.screenshot(path=str(screenshots / "web-app-phone.png"))
    alice.page.click("button.back-button")
    sidebar.wait_for()
    assert not main.is_visible()


def test_sign_in_errors_and_sign_out(stack: Stack, app: Callable[..., ChatPage], pair: tuple[str, str, str]) -> None:
    alice_id, _, _ = pair
    page = app()
    page.page.fill("input[name=user]", alice_id)
    page.page.fill("input[name=password]", "not the password")
    page.page.click("[data-testid=sign-in] button[type=submit]")
    page.page.locator(".signin [role=alert]", has_text="Wrong user name or password").wait_for()
    page.sign_in(alice_id)
    page.page.click("[data-testid=sign-out]")
    page.page.wait_for_selector("[data-testid=sign-in]")
    eventually(lambda: connections(stack, alice_id) == [])
    page.page.reload()
    page.page.wait_for_selector("[data-testid=sign-in]")  # signed out for good, not only in this page


def test_config_names_the_broker_websocket(stack: Stack) -> None:
    status, config = stack.http("GET", "/app/config.json")
    assert status == 200
    assert config["ws_port"] == stack.ws_port and config["ws_path"] == "/mqtt"
    assert json.loads(json.dumps(config))["heartbeat_interval_s"] == 1.0


def test_replies_edits_reactions_and_deletes(stack: Stack, app: Callable[..., ChatPage],
                                             pair: tuple[str, str, str]) -> None:
    alice_id, bob_id, conv = pair
    alice, bob = app(alice_id), app(bob_id)
    alice.page.on("dialog", lambda dialog: dialog.accept())  # "Delete this message for everyone?"
    alice.open_conversation(conv)
    bob.open_conversation(conv)
    alice.send("helo team")
    bob.wait_for_body("helo team")
    at = lambda page, seq: page.page.locator(f"{MESSAGE}[data-seq='{seq}']")  # noqa: E731

    at(bob, 1).hover()
    at(bob, 1).locator("[data-testid=action-reply]").click()
    bob.page.locator("[data-testid=composer-context]", has_text="Replying to").wait_for()
    bob.send("welcome!")
    alice.wait_for_body("welcome!")
    assert "helo team" in at(alice, 2).locator("[data-testid=reply-to]").inner_text()

    at(alice, 1).hover()
    at(alice, 1).locator("[data-testid=action-edit]").click()
    assert alice.page.input_value("[data-testid=message-input]") == "helo team"
    alice.send("hello team")
    at(bob, 1).locator(".body", has_text="hello team").wait_for()
    at(bob, 1).locator("[data-testid=edited]").wait_for()
    at(bob, 2).locator("[data-testid=reply-to]", has_text="hello team").wait_for()

    at(bob, 1).hover()
    at(bob, 1).locator("[data-testid=action-react]").click()
    bob.page.click("[data-testid=pick-emoji][data-emoji='👍']")
    chip = at(alice, 1).locator("[data-testid=reaction][data-emoji='👍']")
    chip.filter(has_text="1").wait_for()
    chip.click()  # alice adds hers
    at(bob, 1).locator("[data-testid=reaction][data-emoji='👍']", has_text="2").wait_for()

    at(alice, 1).hover()
    at(alice, 1).locator("[data-testid=action-delete]").click()
    at(bob, 1).locator("[data-testid=deleted]").wait_for()
    assert at(bob, 1).locator("[data-testid=reaction]").count() == 0
    at(bob, 2).locator("[data-testid=reply-to]", has_text="[deleted]").wait_for()

    # a fresh page renders the conversation as it stands now (view=messages), without replaying the log
    bob.page.reload()
    bob.rendered()
    bob.open_conversation(conv)
    at(bob, 1).locator("[data-testid=deleted]").wait_for()
    assert "hello team" not in bob.page.locator("[data-testid=messages]").inner_text()
    assert bob.shown() == [(1, "[deleted]"), (2, "welcome!")]
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages?view=messages", token=stack.token(bob_id))
    assert status == 200 and page["messages"][0]["deleted"]["by"] == alice_id
    assert alice.errors == [] and bob.errors == []


def test_search_finds_messages_and_opens_one_in_its_conversation(stack: Stack, app: Callable[..., ChatPage],
                                                                   pair: tuple[str, str, str],
                                                                   unique: Callable[[str], str]) -> None:
    alice_id, bob_id, conv = pair
    other = unique("side")
    add_users_and_conversation(stack, [alice_id, bob_id], other, title="Side room")
    with stack.client(bob_id, device="phone") as bob:
        for n in range(1, 121):  # every fifth mentions the quokka: 24 matches, more than one page
            bob.send(conv, f"message {n} about the quokka" if n % 5 == 0 else f"message {n}")
        bob.send(other, "a Quokka in the side room")
        assert bob.drain(30)
    alice = app(alice_id)
    box = alice.page.locator("[data-testid=search-input]")
    results = alice.page.locator("[data-testid=search-result]")

    box.fill("QUOKKA")
    box.press("Enter")
    results.first.wait_for()
    assert alice.page.locator("[data-testid=conversations] [data-testid=conversation]").count() == 0, \
        "the results stand in for the conversation list"
    assert results.count() == 20  # one page, newest first
    first = results.first
    assert (first.get_attribute("data-conv"), first.get_attribute("data-seq")) == (other, "1")
    assert first.locator("mark").inner_text() == "Quokka"  # the matched word, as written
    assert "Side room" in first.inner_text()
    alice.page.click("[data-testid=search-more]")
    eventually(lambda: results.count() == 25)
    assert alice.page.locator("[data-testid=search-more]").count() == 0
    found = [(r.get_attribute("data-conv"), int(r.get_attribute("data-seq") or 0)) for r in results.all()]
    assert found == [(other, 1)] + [(conv, n) for n in range(120, 0, -5)]

    # the oldest match is far back: the conversation walks back by cursor to it and marks it
    results.last.click()
    alice.page.wait_for_selector(f"[data-testid=conversation-view][data-conv='{conv}']")
    target = alice.page.locator(f"{MESSAGE}[data-seq='5']")
    target.wait_for()
    assert "focused" in (target.get_attribute("class") or "")
    assert target.is_visible() and target.bounding_box() is not None
    shown = alice.shown()
    assert [seq for seq, _ in shown] == list(range(shown[0][0], 121)), "no hole between the result and the newest"
    assert "c=" in alice.page.evaluate("location.hash") and "m=5" in alice.page.evaluate("location.hash")

    # within the open conversation only; a word nobody wrote; an empty box gives the list back
    box.fill("quokka")
    alice.page.check("[data-testid=search-within]")
    box.press("Enter")
    eventually(lambda: alice.page.locator("[data-testid=search-results][data-loading=no]").count() == 1
               and results.count() == 20)
    assert {r.get_attribute("data-conv") for r in results.all()} == {conv}
    box.fill("platypus")
    box.press("Enter")
    alice.page.locator("[data-testid=search-empty]", has_text="platypus").wait_for()
    alice.page.click("[data-testid=search-clear]")
    alice.conversation_item(other).wait_for()
    assert results.count() == 0
    assert alice.errors == []


@pytest.mark.parametrize("shared", [True, False], ids=["shared-worker", "one-connection-per-tab"])
def test_conversation_list_when_the_api_is_unreachable(stack: Stack, new_context: Any, pair: tuple[str, str, str],
                                                       shared: bool) -> None:
    alice_id, bob_id, conv = pair
    blocked = {"on": True}
    # the app through a link that drops GET /v1/conversations (the SharedWorker's requests are out of
    # Playwright's reach); sign-in, the rest of the API and the broker stay reachable
    link = FlakyLink(stack.http_port, refuse=http_route("GET", "/v1/conversations", lambda: blocked["on"]))
    try:
        context = new_context()
        if not shared:
            context.add_init_script("delete globalThis.SharedWorker")
        alice = ChatPage(context.new_page(), f"http://127.0.0.1:{link.port}").open()
        alice.sign_in(alice_id)
        assert alice.page.evaluate("chatmq.mode") == ("shared" if shared else "tab")
        problem = alice.page.locator("[data-testid=list-problem]")
        problem.wait_for()
        assert "could not be loaded" in problem.inner_text() and "could not be reached" in problem.inner_text()
        problem.locator("text=/Trying again in \\d+ s/").wait_for()
        assert alice.page.locator("[data-testid=conversation]").count() == 0
        assert "No conversations yet" not in alice.page.inner_text(".sidebar")
        with stack.client(bob_id, device="phone") as bob:
            bob.send(conv, "sent while alice's list was away").result(timeout=10)

        blocked["on"] = False
        alice.page.click("[data-testid=list-retry]")
        alice.conversation_item(conv).locator("[data-testid=unread]", has_text="1").wait_for()
        assert problem.count() == 0
        alice.open_conversation(conv)
        alice.wait_for_body("sent while alice's list was away")
        with stack.client(bob_id, device="phone") as bob:  # subscribed once the list came: live again
            bob.send(conv, "and now live").result(timeout=10)
        alice.wait_for_body("and now live")
        assert alice.errors == []
    finally:
        link.close()


def test_sign_out_and_in_reach_every_tab_without_shared_worker(stack: Stack, app: Callable[..., ChatPage],
                                                              new_context: Any, pair: tuple[str, str, str]) -> None:
    alice_id, _, _ = pair
    context = new_context()
    context.add_init_script("delete globalThis.SharedWorker")
    first = app(alice_id, context=context)
    second = app(context=context)  # the session kept in IndexedDB: signed in, its own connection
    second.wait_online()
    eventually(lambda: len(connections(stack, alice_id)) == 2)
    token = first.page.evaluate("chatmq.session.token")

    first.page.click("[data-testid=sign-out]")
    second.page.wait_for_selector("[data-testid=sign-in]")  # the other tab signed out too
    first.page.wait_for_selector("[data-testid=sign-in]")
    eventually(lambda: connections(stack, alice_id) == [])
    status, _ = stack.http("GET", "/v1/conversations", token=token)
    assert status == 401, "signing out revoked the token"

    second.sign_in(alice_id)  # signing in again in one tab signs in the other
    first.wait_online()
    eventually(lambda: len(connections(stack, alice_id)) == 2)
    assert first.errors == [] and second.errors == []


def test_an_app_that_cannot_start_says_so_and_tries_again(stack: Stack, new_context: Any) -> None:
    context = new_context()
    context.route("**/app/config.json", lambda route: route.abort("connectionrefused"))
    page = ChatPage(context.new_page(), stack.base_url)
    page.page.goto(f"{stack.base_url}/app/")
    error = page.page.locator("[data-testid=boot-error]")
    error.wait_for()
    assert "the server could not be reached" in error.inner_text()
    context.unroute("**/app/config.json")
    page.page.click("[data-testid=boot-retry]")
    page.rendered()
    assert page.signed_out()
