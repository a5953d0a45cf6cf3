"""What a file really is, from its first bytes: the declared type and the name are only claims.

Binary formats are recognised by their magic bytes (the ``filetype`` library); ``text/plain`` is
what is left when the content is UTF-8 without control characters, since text has no magic.
A declared Content-Type or a file name whose extension names another type is refused, so an
upload can never be served as something it did not claim to be, nor claim to be what it is not.
"""

from __future__ import annotations

import mimetypes

import filetype

HEAD_BYTES = 8192  # what filetype needs (it reads at most 8 KiB)
TEXT = "text/plain"
GENERIC = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# Spellings that mean the same content.
ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/opus": "audio/ogg",
    "audio/x-opus+ogg": "audio/ogg",
    "application/ogg": "audio/ogg",
    "audio/mp3": "audio/mpeg",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "image/apng": "image/png",  # an animated PNG is a PNG to every viewer
}
# Declared types a plain-text upload may carry (text formats with no magic of their own).
TEXT_LIKE = frozenset({TEXT, "text/markdown", "text/x-markdown", "text/csv", "text/x-log"})
EXTENSIONS = {".opus": "audio/ogg", ".oga": "audio/ogg", ".md": "text/markdown", ".log": "text/x-log"}
_CONTROL = bytes(range(0, 9)) + bytes(range(14, 32)) + b"\x7f"


def normalise(mime: str | None) -> str:
    base = (mime or "").split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def sniff(head: bytes) -> str | None:
    """The content's type from its first bytes, or None if it is nothing recognisable."""
    if not head:
        return None
    kind = filetype.guess(head)
    if kind is not None:
        return normalise(kind.mime)
    return TEXT if _is_text(head) else None


def _is_text(head: bytes) -> bool:
    if any(byte in _CONTROL for byte in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut by the head's end is fine
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def type_of_name(name: str | None) -> str | None:
    """The type a file name's extension claims, or None if it claims none we know."""
    if not name or "." not in name:
        return None
    ext = "." + name.rsplit(".", 1)[1].lower()
    claimed = EXTENSIONS.get(ext) or mimetypes.types_map.get(ext)
    return normalise(claimed) if claimed else None


def agrees(sniffed: str, claimed: str | None) -> bool:
    """Does a declared type (or a name's type) agree with the sniffed one? No claim agrees."""
    claimed = normalise(claimed)
    if claimed in GENERIC:
        return True
    if sniffed == TEXT:
        return claimed in TEXT_LIKE
    return claimed == sniffed
