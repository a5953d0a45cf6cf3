"""The maximum MQTT packet size, enforced on every transport before a packet body is read.

amqtt 0.12 defect: no packet size limit at all on TCP (a 16 MiB PUBLISH is read into memory and
delivered), while over WebSocket the websockets library's 1 MiB frame limit closes the connection
and silently loses the message. The guard below wraps any amqtt ReaderAdapter, follows the MQTT
framing of the bytes passing through and refuses a packet as soon as its fixed header announces
more than the limit, so TCP and WebSocket behave the same: a log line and a closed connection.
"""

from __future__ import annotations

import logging

from amqtt.adapters import ReaderAdapter

log = logging.getLogger(__name__)

_MAX_LENGTH_BYTES = 4  # the remaining-length varint has at most four bytes
_PUBLISH = 3


class PacketTooLarge(Exception):
    """Not an amqtt MQTTError: amqtt's reader loop would log it and keep reading a broken stream."""


class WildcardPublish(Exception):
    """amqtt 0.12 defect: a PUBLISH topic with a wildcard raises MQTTError halfway through the
    packet, which amqtt's reader loop swallows and then parses the rest of the payload as new
    packets. Raised from the guard instead, it closes the connection as MQTT-3.3.2-2 requires."""


class PacketSizeGuard(ReaderAdapter):
    def __init__(self, inner: ReaderAdapter, limit: int, peer: str) -> None:
        self.inner = inner
        self.limit = limit
        self._peer = peer
        self._in_length = False  # between the type byte and the end of the remaining length
        self._length = 0
        self._shift = 0
        self._length_bytes = 0
        self._body_left = 0
        self._topic: bytearray | None = None  # the start of a PUBLISH body, up to its topic

    async def read(self, n: int = -1) -> bytes:
        data = await self.inner.read(n)
        if data:
            self._follow(data)
        return data

    def feed_eof(self) -> None:
        self.inner.feed_eof()

    def _follow(self, data: bytes) -> None:
        i, size = 0, len(data)
        while i < size:
            if self._body_left:
                taken = min(self._body_left, size - i)
                if self._topic is not None:
                    self._inspect(data[i : i + taken])
                self._body_left -= taken
                i += taken
            elif not self._in_length:  # the packet type byte
                self._in_length, self._length, self._shift, self._length_bytes = True, 0, 0, 0
                self._topic = bytearray() if data[i] >> 4 == _PUBLISH else None
                i += 1
            else:
                byte = data[i]
                i += 1
                self._length |= (byte & 0x7F) << self._shift
                self._shift += 7
                self._length_bytes += 1
                if byte & 0x80 and self._length_bytes < _MAX_LENGTH_BYTES:
                    continue
                self._in_length = False
                self._body_left = self._length
                total = 1 + self._length_bytes + self._length
                if total > self.limit:
                    log.warning(
                        "closing connection from %s: packet of %d bytes exceeds max_packet_bytes=%d",
                        self._peer,
                        total,
                        self.limit,
                    )
                    raise PacketTooLarge(f"packet of {total} bytes exceeds the limit of {self.limit}")

    def _inspect(self, chunk: bytes) -> None:
        head = self._topic
        assert head is not None
        pos = 0
        while True:
            want = 2 if len(head) < 2 else 2 + int.from_bytes(head[:2], "big")
            if len(head) >= want:
                break
            if pos >= len(chunk):
                return
            taken = chunk[pos : pos + want - len(head)]
            head += taken
            pos += len(taken)
        self._topic = None
        if b"+" in head[2:] or b"#" in head[2:]:
            log.warning("closing connection from %s: PUBLISH to a wildcard topic (MQTT-3.3.2-2)", self._peer)
            raise WildcardPublish(bytes(head[2:]).decode(errors="replace"))
