"""``chatmq chat``: a line-based terminal chat client on the client library.

Plain lines, no screen control: it works over ssh, in a pipe and under a pseudo-terminal test.
People are shown by their display names (GET /v1/users), as in the web app; the conversation list
and /who also show their ids, which is what commands and other clients use.
The main thread reads what you type; the client's threads print what arrives (under one lock).
Where the stack is comes from the options, else from what ``chatmq up`` recorded in the data dir
(chatmq.stackinfo), as for the admin commands. Log records reach the screen as ``!`` lines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from chatmq.cli.settings_opts import make_settings
from chatmq.cli.stackinfo import read_stack
from chatmq.clients import Ack, AckTimeout, ApiError, ChatClient, ConnectRefused, Event, HistoryClient, Timeline

log = logging.getLogger(__name__)

# Marks next to my messages: "sent" is the server's ack (stored, with its seq); "delivered" and
# "read" come from the other members' receipts (ChatView.show_mark).
MARKS = {"sent": ("✓", "[sent]"), "delivered": ("✓✓", "[delivered]"), "read": ("✓✓", "[read]")}
TYPING_QUIET_S = 3.0
UNACKED_WARN_S = 5.0  # the client's ack_timeout: a send without the server's ack this long gets a warning line
HELP = ("Type a message and press Enter. Commands, N being a message's #number: /reply N text, /edit N text, "
        "/delete N, /react N emoji, /unreact N emoji, /search words (all your conversations; /search more: older "
        "results), /list (conversations, unread), /who (presence), /help, /quit (or Ctrl-D).")
SEARCH_PAGE = 10
USAGE = {
    "reply": "/reply N text", "edit": "/edit N text", "delete": "/delete N", "react": "/react N emoji",
    "unreact": "/unreact N emoji",
}
DEFAULT_HOST, DEFAULT_MQTT_PORT, DEFAULT_HTTP_PORT = "127.0.0.1", 1883, 8080


class ChatView:
    """Everything the terminal shows, one whole line at a time."""

    def __init__(self, me: str, out: TextIO) -> None:
        self.me, self.out = me, out
        self._lock = threading.Lock()
        self._unicode = _can_encode(out, "✓")
        self._typing_shown: dict[str, float] = {}
        self._presence: dict[str, str] = {}
        self._lost = False
        self._names: dict[str, str] = {}  # user id -> display name, for those who have one

    def set_names(self, profiles: list[dict[str, Any]]) -> None:
        """Profiles from GET /v1/users: who is shown by which name from now on."""
        for profile in profiles:
            name = profile.get("display_name")
            if name:
                self._names[str(profile["id"])] = str(name)
            else:
                self._names.pop(str(profile["id"]), None)

    def name(self, user: str) -> str:
        """What to call a user: the display name, else the id."""
        return self._names.get(user, user)

    def name_and_id(self, user: str) -> str:
        name = self._names.get(user)
        return f"{name} ({user})" if name and name != user else user

    def line(self, text: str = "") -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def conversations(self, convs: list[dict[str, Any]]) -> None:
        self.line("Conversations:")
        for n, conv in enumerate(convs, 1):
            title = f' "{conv["title"]}"' if conv.get("title") else ""
            unread = conv.get("unread", "-")
            members = ", ".join(self.name_and_id(m) for m in conv.get("members", []))
            last = conv.get("last_seq", 0)
            self.line(f"  {n}. {conv['id']}{title}  members: {members}  last #{last}  unread {unread}")

    def message(self, message: dict[str, Any]) -> None:
        """A message as it stands (the view=messages shape): replies, edits, deletion, reactions."""
        when = datetime.fromtimestamp(int(message.get("ts") or 0) / 1000).strftime("%H:%M:%S")
        sender = message.get("sender", "?")
        self.line(f"[{when}] {self._headline(message)}: {self._body(message)}")
        if message.get("reactions") and not message.get("deleted"):
            self.line(f"  {self._reactions(message)}")
        self._typing_shown.pop(sender, None)

    def change(self, kind: str, message: dict[str, Any], by: str) -> None:
        """A change to a message shown before, as a line of its own (no screen control)."""
        seq = message.get("seq")
        if kind == "edit":
            self.line(f"  {self._headline(message)}: {self._body(message)}")
        elif kind == "delete":
            self.line(f"  #{seq} [deleted] by {self.name(by)}")
        else:
            self.line(f"  {self._reactions(message)}")

    def _headline(self, message: dict[str, Any]) -> str:
        sender = message.get("sender", "?")
        who = f"{self.name(sender)} (me)" if sender == self.me else self.name(sender)
        reply = f" {'↪' if self._unicode else 're'} #{message['reply_to']}" if message.get("reply_to") else ""
        edited = " (edited)" if message.get("edited") else ""
        return f"#{message.get('seq')} {who}{reply}{edited}"

    @staticmethod
    def _body(message: dict[str, Any]) -> str:
        if message.get("deleted"):
            return "[deleted]"
        extra = f"  [{len(message['attachments'])} attachment(s)]" if message.get("attachments") else ""
        return f"{message.get('body', '')}{extra}"

    def _reactions(self, message: dict[str, Any]) -> str:
        groups = [f"{r['emoji']} {', '.join(map(self.name, r['users']))}" for r in message.get("reactions") or []]
        return f"#{message.get('seq')} reactions: {' · '.join(groups) if groups else 'none'}"

    def search_result(self, message: dict[str, Any], *, here: bool) -> None:
        """A search result: where it is (its conversation unless it is the open one) and the message."""
        when = datetime.fromtimestamp(int(message.get("ts") or 0) / 1000).strftime("%Y-%m-%d %H:%M")
        where = "" if here else f"{message.get('conv')} "
        self.line(f"? [{when}] {where}{self._headline(message)}: {self._body(message)}")

    def show_mark(self, status: str, seq: int | None, detail: str = "") -> None:
        """A mark for one of my messages (``MARKS``)."""
        symbol, plain = MARKS.get(status, (status, f"[{status}]"))
        self.line(f"  {symbol if self._unicode else plain} {status} #{seq}{detail}")

    def ack(self, ack: Ack) -> None:
        if ack.ok:
            self.show_mark("sent", ack.seq)
        else:
            error = ack.error or {}
            self.line(f"  ! rejected ({error.get('code', '?')}): {error.get('message', '')}")

    def typing(self, user: str, typing: bool) -> None:
        if user == self.me:
            return
        now = time.monotonic()
        if not typing:
            self._typing_shown.pop(user, None)
        elif now - self._typing_shown.get(user, -TYPING_QUIET_S) >= TYPING_QUIET_S:
            self._typing_shown[user] = now
            self.line(f"* {self.name(user)} is typing...")

    def presence(self, user: str, status: str) -> None:
        if user != self.me and self._presence.get(user) != status:
            self._presence[user] = status
            self.line(f"* {self.name(user)} is {status}")

    def connection(self, connected: bool, _reason: str) -> None:
        """The link to the server: lost (the client reconnects by itself) and back again."""
        if not connected:
            self._lost = True
            self.line("--- connection lost; reconnecting (what you type is sent once it is back)")
        elif self._lost:
            self._lost = False
            self.line("--- connected again")

    def unacked(self, text: str, timeout: AckTimeout) -> None:
        preview = text if len(text) <= 40 else text[:37] + "..."
        where = "still sending" if timeout.connected else "not connected; sent when the connection is back"
        self.line(f"  ! not acked after {timeout.waited:.0f} s ({where}): {preview}")

    @contextmanager
    def logs_as_lines(self) -> Iterator[None]:
        """While chatting, log records are ``!`` lines on this screen instead of raw log lines
        between the messages: WARNING and up (everything with --log-level debug)."""
        root = logging.getLogger()
        handler = _ViewLogHandler(self)
        handler.setLevel(logging.DEBUG if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING)
        saved = root.handlers[:]
        root.handlers[:] = [handler]
        try:
            yield
        finally:
            root.handlers[:] = saved


class _ViewLogHandler(logging.Handler):
    def __init__(self, view: ChatView) -> None:
        super().__init__()
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.view.line(f"! {record.getMessage()}")
        except Exception:
            self.handleError(record)


class NameBook:
    """The display names the view shows, asked of GET /v1/users once per person. An error leaves
    ids on screen and is not retried per message (a live message must not wait on the API again);
    /list asks again."""

    def __init__(self, history: HistoryClient, view: ChatView) -> None:
        self.history, self.view = history, view
        self._asked: set[str] = set()
        self._lock = threading.Lock()

    def load(self, users: list[str], *, again: bool = False) -> None:
        with self._lock:
            wanted = sorted(set(users) if again else set(users) - self._asked)
            self._asked.update(wanted)
        if not wanted:
            return
        try:
            self.view.set_names(self.history.users(wanted))
        except (ApiError, OSError) as exc:
            log.warning("display names not loaded (%s); showing user ids", exc)


class ChatSession:
    """One open conversation: history, then live events, and sending what is typed.

    What is on screen is read: the session marks the conversation read as messages are shown, so
    the other members see ✓✓ read. Messages are kept as they stand (clients.Timeline) so a change
    is shown with the message it changes."""

    def __init__(self, client: ChatClient, history: HistoryClient, view: ChatView, conv: dict[str, Any],
                 names: NameBook | None = None) -> None:
        self.client, self.history, self.view, self.conv = client, history, view, conv
        self.others = [m for m in conv.get("members", []) if m != client.user]
        self.timeline = Timeline()
        self._marked: dict[tuple[str, str], int] = {}  # (member, status) -> my highest seq shown as such
        self._search_next: tuple[str, str] | None = None  # the last search's words and next cursor
        self._sending: dict[str, str] = {}  # client_msg_id -> what was typed, until its ack
        self.names = names or NameBook(history, view)

    def open(self, history_count: int) -> None:
        conv_id = self.conv["id"]
        page = self.history.page(conv_id, limit=history_count, view="messages")
        self.timeline.load(page["messages"], int(page["last_seq"]))
        more = "earlier messages not shown; " if page["has_more"] else ""
        self.view.line(f"--- {conv_id}: {more}{HELP}")
        for message in page["messages"]:
            self.view.message(message)
        self.client.on_message(self._entry)
        self.client.on_typing(self._typing)
        self.client.on_presence(self._presence)
        self.client.on_receipt(self._receipt)
        self.client.on_ack(self.view.ack)
        self.client.on_ack_timeout(self._unacked)
        self.client.on_connection(self.view.connection)
        self.client.join(conv_id, after=self.timeline.last_seq)
        for marker in self.client.markers(conv_id).values():  # what the others had read before
            self._show_marks(marker.user, "read", marker.read_seq, quiet=True)
            self._show_marks(marker.user, "delivered", marker.delivered_seq, quiet=True)
        self.client.mark_read(conv_id, self.timeline.last_seq)
        for user in self.others:
            self.client.watch_presence(user)
        self.view.line("--- live")

    def handle(self, line: str) -> bool:
        """One typed line; False to quit."""
        text = line.rstrip("\r\n")
        command, _, rest = text.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            self.view.line(HELP)
        elif command == "/who":
            for user in self.others:
                try:
                    state = self.history.presence(user)
                    self.view.line(f"* {self.view.name_and_id(user)}: {state.get('status')}")
                except ApiError as exc:
                    self.view.line(f"* {self.view.name_and_id(user)}: unknown ({exc})")
        elif command == "/list":
            try:
                convs = self.history.conversations()
                self.names.load([m for c in convs for m in c.get("members", [])], again=True)
                self.view.conversations(convs)
            except ApiError as exc:
                self.view.line(f"! cannot list conversations: {exc}")
        elif command == "/search":
            self._search(rest.strip())
        elif command.startswith("/") and command[1:] in USAGE:
            self._change(command[1:], rest.strip())
        elif command.startswith("/"):
            self.view.line(f"! unknown command {command} (/help lists them)")
        elif text.strip():
            self._sent(lambda cmid: self.client.send(self.conv["id"], text, client_msg_id=cmid), text)
        return True

    def _search(self, words: str) -> None:
        """/search words: the newest matches in all my conversations; /search more: the next ones."""
        if not words:
            self.view.line("! usage: /search words (or /search more)")
            return
        more = words == "more"
        before: str | None = None
        if more:
            if self._search_next is None:
                self.view.line("! nothing more: /search words first")
                return
            q, before = self._search_next
        else:
            q = words
        try:
            page = self.history.search(q, before=before, limit=SEARCH_PAGE)
        except ApiError as exc:
            self.view.line(f"! search failed: {exc.message if exc.status else exc}")
            return
        results = page["results"]
        self._search_next = (q, page["next"]) if page.get("next") else None
        if not results:
            self.view.line(f"? no {'more ' if more else ''}messages with: {q}")
            return
        for message in results:
            self.view.search_result(message, here=message["conv"] == self.conv["id"])
        tail = "older ones: /search more" if self._search_next else "no more"
        self.view.line(f"? {len(results)} result(s) for: {q} ({tail})")

    def _change(self, kind: str, args: str) -> None:
        """/reply N text, /edit N text, /delete N, /react N emoji, /unreact N emoji."""
        number, _, rest = args.partition(" ")
        number = number.removeprefix("#")
        needs_text = kind != "delete"
        if not number.isdigit() or int(number) < 1 or (needs_text and not rest.strip()):
            self.view.line(f"! usage: {USAGE[kind]}")
            return
        seq, conv, rest = int(number), self.conv["id"], rest.strip()
        send = {
            "reply": lambda cmid: self.client.send(conv, rest, reply_to=seq, client_msg_id=cmid),
            "edit": lambda cmid: self.client.edit(conv, seq, rest, client_msg_id=cmid),
            "delete": lambda cmid: self.client.delete(conv, seq, client_msg_id=cmid),
            "react": lambda cmid: self.client.react(conv, seq, rest, client_msg_id=cmid),
            "unreact": lambda cmid: self.client.unreact(conv, seq, rest, client_msg_id=cmid),
        }[kind]
        self._sent(send, f"/{kind} {args}")

    def _sent(self, send: Callable[[str], Future[Ack]], text: str) -> None:
        """Send with a client_msg_id of ours, so the client's ack timeout (``on_ack_timeout``) can say
        which line is still unacked (the client keeps resending it)."""
        cmid = uuid.uuid4().hex
        self._sending[cmid] = text
        send(cmid).add_done_callback(lambda _f: self._sending.pop(cmid, None))

    def _unacked(self, timeout: AckTimeout) -> None:
        text = self._sending.get(timeout.client_msg_id, f"a message queued earlier ({timeout.client_msg_id})")
        self.view.unacked(text, timeout)

    def _typing(self, event: Event) -> None:
        if event.conv == self.conv["id"] and event.user:
            self.view.typing(event.user, bool(event.payload.get("typing")))

    def _presence(self, event: Event) -> None:
        if event.user:
            self.view.presence(event.user, str(event.payload.get("status")))

    def _entry(self, event: Event) -> None:
        """An entry of the log, live or caught up, in seq order: shown, and then read."""
        entry = event.payload
        if isinstance(entry.get("sender"), str):
            self.names.load([entry["sender"]])  # someone who joined since (once per person)
        applied = self.timeline.apply(entry)
        if applied is not None:
            message = self.timeline.get(applied.seq) or {}
            if applied.kind == "message":
                self.view.message(message)
            else:
                self.view.change(applied.kind, message, str(entry.get("sender")))
        self.client.mark_read(self.conv["id"], int(entry["seq"]))

    def _receipt(self, event: Event) -> None:
        if event.conv == self.conv["id"] and event.user and event.user != self.client.user:
            seq = event.payload.get("seq")
            if isinstance(seq, int):
                self._show_marks(event.user, str(event.payload.get("status")), seq)

    def _show_marks(self, user: str, status: str, seq: int, *, quiet: bool = False) -> None:
        """Mark the newest of my messages up to ``seq`` that ``user`` had not reached before."""
        key = (user, status)
        mine = [s for s, m in self.timeline.messages.items()
                if m.get("sender") == self.client.user and self._marked.get(key, 0) < s <= seq]
        if mine:
            self._marked[key] = max(mine)
            if not quiet:
                self.view.show_mark(status, max(mine), f" ({self.view.name(user)})")


def _can_encode(out: TextIO, text: str) -> bool:
    try:
        text.encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.ClickException("--password-stdin: no password on standard input")
        return line.rstrip("\r\n")
    return os.environ.get("CHATMQ_PASSWORD") or click.prompt("Password", hide_input=True)


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    http_url: str


def locate(data_dir: Path | None, host: str | None, port: int | None, http_url: str | None) -> Server:
    """Options (and their environment variables) first, then what ``chatmq up`` recorded in the
    data dir (stack.json), then the defaults of a plain ``chatmq up``."""
    stack = read_stack(make_settings(data_dir=data_dir).data_dir)
    host = host or str(stack.get("host") or DEFAULT_HOST)
    port = port or int(stack.get("mqtt_port") or DEFAULT_MQTT_PORT)
    if http_url is None:
        http_host = stack.get("host") or DEFAULT_HOST
        http_url = f"http://{http_host}:{int(stack.get('http_port') or DEFAULT_HTTP_PORT)}"
    return Server(host, port, http_url)


def _choose(view: ChatView, convs: list[dict[str, Any]], wanted: str | None) -> dict[str, Any]:
    by_id = {c["id"]: c for c in convs}
    if wanted is not None:
        if wanted not in by_id:
            raise click.ClickException(f"you are not a member of a conversation {wanted!r}")
        return by_id[wanted]
    while True:
        click.echo(f"Open which conversation [1-{len(convs)} or id]: ", nl=False)
        answer = sys.stdin.readline()
        if not answer:
            raise click.ClickException("no conversation chosen")
        answer = answer.strip()
        if answer in by_id:
            return by_id[answer]
        if answer.isdigit() and 1 <= int(answer) <= len(convs):
            return convs[int(answer) - 1]
        view.line(f"no conversation {answer!r}")


@click.command()
@click.option("--user", "-u", required=True, envvar="CHATMQ_USER", help="your user id")
@click.option("--conv", "-c", "conv_id", default=None, help="open this conversation (else choose from a list)")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="use the ports `chatmq up` recorded in this data dir [env CHATMQ_DATA_DIR; default ./data]")
@click.option("--host", default=None, help="MQTT broker host [default: as recorded, else 127.0.0.1]")
@click.option("--port", type=int, default=None, envvar="CHATMQ_MQTT_PORT",
              help="MQTT port [default: as recorded, else 1883]")
@click.option("--http-url", default=None, envvar="CHATMQ_HTTP_URL",
              help="the chatmq HTTP API [default: as recorded, else http://127.0.0.1:8080]")
@click.option("--device", default="terminal", show_default=True, help="device id for presence")
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin "
              "(else CHATMQ_PASSWORD, else a prompt)")
@click.option("--history", "history_count", type=click.IntRange(1, 200), default=20, show_default=True,
              help="recent messages to show")
@click.option("--state-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="keep unacked sends here so a restart resends them")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              envvar="CHATMQ_HEARTBEAT_INTERVAL_S",
              help="presence heartbeat period in seconds; must match the server's heartbeat interval")
def chat(user: str, conv_id: str | None, data_dir: Path | None, host: str | None, port: int | None,
         http_url: str | None, device: str, password_stdin: bool, history_count: int, state_file: Path | None,
         heartbeat: float) -> None:
    """Chat from a terminal: pick a conversation, see its history, then talk live.

    It finds the stack like the admin commands do: --host/--port/--http-url, else the ports
    `chatmq up` recorded in the data dir, else the defaults (MQTT 1883, HTTP 8080)."""
    server = locate(data_dir, host, port, http_url)
    password = _read_password(password_stdin)
    view = ChatView(user, sys.stdout)
    history = HistoryClient(server.http_url, user, password)
    try:
        token = history.token()
        convs = history.conversations()
    except ApiError as exc:
        if exc.status == 401:
            raise click.ClickException("login failed: invalid username or password") from None
        raise click.ClickException(f"cannot use the API at {server.http_url}: {exc}") from None
    if not convs:
        raise click.ClickException(f"{user} has no conversations yet (an admin adds you: chatmq conv create "
                                   f"--id ID --members {user},...)")
    names = NameBook(history, view)
    names.load([user, *(m for c in convs for m in c.get("members", []))])
    view.conversations(convs)
    conv = _choose(view, convs, conv_id)

    client = ChatClient(server.host, server.port, user, password, token=token, device=device,
                        api_url=server.http_url, state_file=state_file, queue_events=False,
                        heartbeat_interval=heartbeat, ack_timeout=UNACKED_WARN_S)
    with view.logs_as_lines():
        try:
            client.connect()
        except (ConnectRefused, OSError) as exc:
            raise click.ClickException(f"cannot connect to MQTT at {server.host}:{server.port}: {exc}") from None
        session = ChatSession(client, history, view, conv, names)
        try:
            session.open(history_count)
            while line := sys.stdin.readline():  # readline, not iteration: one Ctrl-D on a tty is EOF
                if not session.handle(line):
                    break
            if not client.drain(5):
                view.line(f"! {len(client.outbox)} message(s) not acked yet"
                          + (f"; kept in {state_file}" if state_file else ""))
        except KeyboardInterrupt:
            pass
        finally:
            client.close()
    view.line("bye")


if __name__ == "__main__":
    chat()
