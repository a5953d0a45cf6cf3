"""Small networking helpers shared by the CLI, the services and the tests."""

from __future__ import annotations

import random
import socket
import time

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
