"""Small networking helpers shared by the CLI, the services and the tests."""

from __future__ import annotations

import random
import socket
import time
from typing import Any

_LOWEST_PORT = 20_000  # below this: the well-known and registered services a machine may run


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (never assume 1883 or 6379 are).

    Picked at random below the kernel's ephemeral range, not with bind(0): bind(0) hands out ports
    from the range outgoing connections use, so one of the many client sockets on a busy machine
    could take it before the server binds it (seen in CI: a bridge restarting forever on "Address
    already in use" for its metrics port).
    """
    top = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(_LOWEST_PORT, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    return low if low > _LOWEST_PORT + 1_000 else 32_768


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until something accepts TCP connections on host:port, or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_in_use(host: str, port: int) -> bool:
    """True if binding host:port fails, i.e. another process listens there already."""
    bind_host = "" if host in ("0.0.0.0", "") else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, port))
        except OSError:
            return True
    return False


def disable_nagle(sock: Any) -> None:
    """Set TCP_NODELAY on a client's socket (paho leaves Nagle on; a paho ``on_socket_open`` callback).

    Chat packets are small and latency-bound. With Nagle on, a small write waits while an earlier
    one is unacknowledged, and a peer that delays its ACK (Linux: 40 ms when it has nothing to send
    back, as a broker relaying QoS 0 has not) stalls the sender for that long: measured as a p99 of
    43 ms in bench/relay.py at QoS 0, 2.5 to 4 ms with TCP_NODELAY. Works on anything with
    ``fileno()`` (paho's TLS and WebSocket wrappers too); a non-TCP socket is left alone.
    """
    try:
        with socket.fromfd(sock.fileno(), socket.AF_INET, socket.SOCK_STREAM) as view:  # a dup of the fd
            view.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError, ValueError):
        pass  # a Unix socket, or a socket already closed
