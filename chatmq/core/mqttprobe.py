"""A minimal MQTT 3.1.1 handshake, to tell "the broker answers MQTT" from "a port is open".

Health checks use it instead of a bare TCP connect: brokers log a bare connect-and-close as a
protocol error, and an open port says nothing about whether the broker behind it still works.
Twenty bytes out, four back; no client library needed for that.
"""

from __future__ import annotations

import socket

from chatmq.core.mqtt.codec import CodecError, Connack, Connect, Decoder, Disconnect


def probe(host: str, port: int, timeout: float, *, client_id: str, username: str | None = None,
          password: str | None = None) -> int:
    """Send CONNECT, return the CONNACK return code (0 = accepted), then DISCONNECT.

    Raises OSError when nothing answers and ValueError when the answer is not a CONNACK.
    """
    secret = password.encode() if username is not None and password is not None else None  # [MQTT-3.1.2-22]
    decoder = Decoder(max_packet_size=64)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(Connect(client_id, keepalive=10, username=username, password=secret).encode())
        try:
            while (answer := decoder.next_packet()) is None:
                chunk = sock.recv(decoder.wanted)
                if not chunk:
                    raise ValueError("connection closed before CONNACK")
                decoder.feed(chunk)
        except CodecError as error:
            raise ValueError(f"not a CONNACK: {error}") from None
        if not isinstance(answer, Connack):
            raise ValueError(f"not a CONNACK: {type(answer).__name__.upper()}")
        if answer.return_code == 0:
            sock.sendall(Disconnect().encode())  # a clean goodbye, so no will and no error log
        return answer.return_code
