"""A minimal MQTT 3.1.1 handshake, to tell "the broker answers MQTT" from "a port is open".

Health checks use it instead of a bare TCP connect: brokers log a bare connect-and-close as a
protocol error, and an open port says nothing about whether the broker behind it still works.
Twenty bytes out, four back; no client library needed for that.
"""

from __future__ import annotations

import socket
import struct


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, username: str | None = None, password: str | None = None) -> bytes:
    flags = 0x02  # clean session
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + payload
    length, encoded = len(body), b""
    while True:  # MQTT variable-length "remaining length"
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


def probe(host: str, port: int, timeout: float, *, client_id: str, username: str | None = None,
          password: str | None = None) -> int:
    """Send CONNECT, return the CONNACK return code (0 = accepted), then DISCONNECT.

    Raises OSError when nothing answers and ValueError when the answer is not a CONNACK.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(connect_packet(client_id, username, password))
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                raise ValueError("connection closed before CONNACK")
            answer += chunk
        if answer[0] != 0x20 or answer[1] != 0x02:
            raise ValueError(f"not a CONNACK: {answer.hex()}")
        if answer[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT: a clean goodbye, so no will and no error log
        return answer[3]
