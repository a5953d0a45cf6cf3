"""Hand-built MQTT packets over a plain socket, for what paho will not send (or not send wrong)."""

from __future__ import annotations

import socket
import struct
import time

from chatmq.core.mqtt.codec import Connect, Subscribe, Will, encode_frame, encode_publish, encode_string


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
    """A CONNECT (will at QoS 1); ``level`` 3 or 5 builds another protocol's, which the codec does not."""
    if level == 4:
        secret = None if password is None else password.encode()
        return Connect(client_id, clean, keepalive, username, secret,
                       None if will is None else Will(will[0], will[1], 1)).encode()  # fmt: skip
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    if will is not None:
        flags |= 0x04 | 0x08  # will flag, will QoS 1
    header = encode_string("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        header += b"\x00"  # no properties
    body = encode_string(client_id)
    if will is not None:
        if level == 5:
            body += b"\x00"
        body += encode_string(will[0]) + encode_string(will[1])
    if username is not None:
        body += encode_string(username)
    if password is not None:
        body += encode_string(password)
    return encode_frame(0x10, header + body)


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1) -> bytes:
    return encode_publish(topic, payload, qos, packet_id if qos else None)


def subscribe(topic_filter: str, *, qos: int = 1, packet_id: int = 1) -> bytes:
    return Subscribe(packet_id, [(topic_filter, qos)]).encode()


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
