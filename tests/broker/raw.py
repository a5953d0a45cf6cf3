"""Hand-built MQTT packets over a plain socket, for what paho will not send (or not send wrong)."""

from __future__ import annotations

import socket
import struct
import time


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _length(len(body)) + body


def connect(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 60,
    level: int = 4,
    will: tuple[str, bytes] | None = None,
    clean: bool = True,
) -> bytes:
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    if will is not None:
        flags |= 0x04 | 0x08  # will flag, will QoS 1
    header = _string("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        header += b"\x00"  # no properties
    body = _string(client_id)
    if will is not None:
        if level == 5:
            body += b"\x00"
        body += _string(will[0]) + _string(will[1])
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return packet(0x10, header + body)


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def subscribe(topic_filter: str, *, qos: int = 1, packet_id: int = 1) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + _string(topic_filter) + bytes([qos]))


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=5)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, n: int, timeout: float = 5.0) -> bytes:
        """Up to n bytes; fewer (maybe none) if the peer closes or the timeout passes."""
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < n and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(out))
            except TimeoutError:
                break
            except ConnectionResetError:
                return out
            if not chunk:
                break
            out += chunk
        return out

    def closed_by_peer(self, timeout: float) -> bool:
        """True once the broker has closed the connection (EOF or reset) within the timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(4096):
                    return True
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False

    def close(self) -> None:
        self.sock.close()
