"""Types come from the content; names and declared types are claims that must agree with it."""

from __future__ import annotations

import pytest

from chatmq.core.media.sniff import agrees, sniff, type_of_name
from tests.media import samples

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (samples.PNG, "image/png"),
        (samples.JPEG, "image/jpeg"),
        (samples.GIF, "image/gif"),
        (samples.WEBP, "image/webp"),
        (samples.PDF, "application/pdf"),
        (samples.OGG_OPUS, "audio/ogg"),
        (samples.MP4, "video/mp4"),
        (samples.TEXT, "text/plain"),
        (samples.HTML, "text/plain"),
        (samples.ELF, "application/x-executable"),
        (samples.BINARY_JUNK, None),
        (b"", None),
        (b"text with a NUL\x00 inside", None),
        ("ü".encode() * 4096 + "é".encode()[:1], "text/plain"),  # a character cut at the head's end
        (b"\xff\xfe not utf-8 \xc0", None),
    ],
)
def test_sniff(data: bytes, mime: str | None) -> None:
    assert sniff(data[:8192]) == mime


@pytest.mark.parametrize(
    ("name", "mime"),
    [("a.png", "image/png"), ("A.JPG", "image/jpeg"), ("voice.opus", "audio/ogg"), ("notes.md", "text/markdown"),
     ("x.html", "text/html"), ("noext", None), (None, None), ("weird.zzz", None)],
)
def test_type_of_name(name: str | None, mime: str | None) -> None:
    assert type_of_name(name) == mime


@pytest.mark.parametrize(
    ("sniffed", "claimed", "ok"),
    [
        ("image/png", None, True),
        ("image/png", "application/octet-stream", True),
        ("image/png", "image/png; charset=binary", True),
        ("image/jpeg", "image/jpg", True),
        ("audio/ogg", "audio/opus", True),
        ("image/png", "image/jpeg", False),
        ("application/pdf", "image/png", False),
        ("text/plain", "text/plain", True),
        ("text/plain", "text/markdown", True),
        ("text/plain", "text/html", False),
        ("text/plain", "image/png", False),
    ],
)
def test_agrees(sniffed: str, claimed: str | None, ok: bool) -> None:
    assert agrees(sniffed, claimed) is ok
