"""``chatmq export-conv`` and ``chatmq import-conv``: one conversation's history as JSON Lines, to
copy it into another conversation (renumbered). Moving a whole installation, ids and seqs kept, is
``chatmq export`` / ``chatmq import`` (chatmq/cli/transfer.py).

One line per entry of the log, the ``chat/{conv}/msg`` payload (chatmq.core.store.Message.to_payload),
oldest first: messages, and the edits, deletions and reactions that change them. Import appends
through the store like the bridge does, keeping sender, client_msg_id, body, attachments, time and
kind; the (conv, sender, client_msg_id) idempotence key makes a repeated import add nothing.
Imported entries get the target conversation's next seqs, and a change or reply is pointed at the
seq its message got, so the conversation reads the same; they are not pushed to devices (they are
history: devices see them through the API's history pages).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Literal

import click
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatmq.cli.settings_opts import make_settings, store_options
from chatmq.core.ids import ID_PATTERN
from chatmq.core.protocol import MAX_CLIENT_MSG_ID_CHARS, EntryKind
from chatmq.core.store import NewMessage, NotFound, Store, open_store

PAGE = 200


class ExportedMessage(BaseModel):
    """One line as ``chatmq export`` writes it; what import needs of it (seq and id are the source's)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    conv: str | None = Field(default=None, pattern=f"^{ID_PATTERN}$")
    sender: str = Field(pattern=f"^{ID_PATTERN}$")
    client_msg_id: str = Field(min_length=1, max_length=MAX_CLIENT_MSG_ID_CHARS)
    body: str
    ts: int = Field(ge=0)
    attachments: list[dict[str, Any]] | None = None
    seq: int | None = Field(default=None, ge=1)  # what a change or reply here may refer to
    kind: Literal["message", "edit", "delete", "react", "unreact"] = "message"
    target: int | None = Field(default=None, ge=1)
    reply_to: int | None = Field(default=None, ge=1)
    emoji: str | None = None

    @property
    def refers_to(self) -> int | None:
        return self.target if self.kind != EntryKind.MESSAGE else self.reply_to


def _open(data_dir: Path | None, store_url: str | None) -> Store:
    return open_store(make_settings(data_dir=data_dir, store_url=store_url).resolved_store_url)


@click.command("export-conv")
@click.argument("conv_id")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.File("wb"), default="-", help="file to write [default: stdout]")
@store_options
def export(conv_id: str, fmt: str, output: IO[bytes], data_dir: Path | None, store_url: str | None) -> None:
    """Write CONV_ID's whole history, oldest first, one JSON object per line (for import-conv).

    To move or copy a whole installation with its ids and seqs, use `chatmq export`."""
    store = _open(data_dir, store_url)
    try:
        conv = store.get_conversation(conv_id)
        if conv is None:
            raise click.ClickException(f"unknown conversation {conv_id!r}")
        written = 0
        with click.progressbar(length=conv.last_seq, label=f"exporting {conv_id}", file=sys.stderr) as bar:
            after = 0
            while True:
                page = store.history(conv_id, after=after, limit=PAGE)
                for message in page.messages:
                    output.write(orjson.dumps(message.to_payload()) + b"\n")
                    written += 1
                if not page.messages:
                    break
                bar.update(page.messages[-1].seq - after)
                after = page.messages[-1].seq
                if not page.has_more:
                    break
        output.flush()
    finally:
        store.close()
    click.echo(f"exported {written} messages of {conv_id}", err=True)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise click.ClickException(f"{path}:{number}: a message is a JSON object")
            yield number, data


def _new_message(path: Path, number: int, data: dict[str, Any], conv: str | None) -> tuple[ExportedMessage,
                                                                                           NewMessage]:
    try:
        line = ExportedMessage.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc']) or 'line'}: {error['msg'].lower()}"
                             for error in exc.errors())
        raise click.ClickException(f"{path}:{number}: not a message ({problems})") from None
    target = conv or line.conv
    if target is None:
        raise click.ClickException(f"{path}:{number}: not a message (conv: field required; or give --conv)")
    if line.kind != EntryKind.MESSAGE and line.target is None:
        raise click.ClickException(f"{path}:{number}: not a message (target: field required for a {line.kind})")
    return line, NewMessage(
        conv=target, sender=line.sender, client_msg_id=line.client_msg_id, body=line.body, ts=line.ts,
        attachments=tuple(line.attachments or ()), kind=EntryKind(line.kind), target=line.target,
        reply_to=line.reply_to, emoji=line.emoji,
    )


@click.command("import-conv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--conv", "conv_id", default=None, help="import into this conversation [default: each line's conv]")
@store_options
def import_(file: Path, conv_id: str | None, data_dir: Path | None, store_url: str | None) -> None:
    """Append the messages of a JSON Lines FILE (as written by `chatmq export-conv`), RENUMBERED.

    Entries get the target conversation's next seqs (replies and changes follow them), so this
    copies history into a conversation that may already have its own. The whole file is checked
    before anything is written, so a bad line loses nothing. To keep ids and seqs, use
    `chatmq export` / `chatmq import`."""
    lines = [(n, *_new_message(file, n, data, conv_id)) for n, data in _lines(file)]
    in_file = {(m.conv, line.seq) for _, line, m in lines if line.seq is not None}
    for number, line, message in lines:
        if line.refers_to is not None and (message.conv, line.refers_to) not in in_file:
            raise click.ClickException(f"{file}:{number}: refers to seq {line.refers_to}, which is not in the file")
    messages = [m for _, _, m in lines]
    store = _open(data_dir, store_url)
    added = duplicates = 0
    refused: list[str] = []
    try:
        for conv in sorted({m.conv for m in messages}):
            if store.get_conversation(conv) is None:
                raise click.ClickException(f"unknown conversation {conv!r} (create it first: chatmq conv create)")
        with click.progressbar(length=len(messages), label=f"importing {file.name}", file=sys.stderr) as bar:
            got: dict[tuple[str, int], int] = {}  # (conv, seq in the file) -> the seq it got here
            batch: list[tuple[int, ExportedMessage, NewMessage]] = []

            def write() -> None:
                nonlocal added, duplicates
                try:
                    results = store.append([m for _, _, m in batch])
                except NotFound as exc:
                    raise click.ClickException(str(exc)) from None
                for (number, line, message), result in zip(batch, results, strict=True):
                    if result.refusal is not None:
                        refused.append(f"{file}:{number}: refused ({result.refusal.code}): {result.refusal.message}")
                    elif result.message is not None and line.seq is not None:
                        got[(message.conv, line.seq)] = result.message.seq
                duplicates += sum(1 for r in results if r.duplicate)
                added += sum(1 for r in results if r.message is not None and not r.duplicate)
                bar.update(len(batch))
                batch.clear()

            for number, line, message in lines:
                ref = line.refers_to
                if ref is not None and (message.conv, ref) not in got:
                    write()  # what it refers to is in the batch: store that first, to learn its seq
                if ref is not None:
                    here = got.get((message.conv, ref))
                    if here is None:
                        refused.append(f"{file}:{number}: refers to seq {ref}, whose line was not imported")
                        bar.update(1)
                        continue
                    message = replace(message, target=here) if line.kind != EntryKind.MESSAGE else \
                        replace(message, reply_to=here)  # fmt: skip
                batch.append((number, line, message))
                if len(batch) >= PAGE:
                    write()
            if batch:
                write()
    finally:
        store.close()
    for line in refused:
        click.echo(line, err=True)
    click.echo(f"imported {added} messages, renumbered ({duplicates} already present"
               + (f", {len(refused)} refused)" if refused else ")"))
