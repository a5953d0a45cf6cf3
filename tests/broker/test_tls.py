"""MQTT over TLS and over secure WebSocket, with a certificate the test makes itself."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from chatmq.broker.config import TLSConfigError, tls_listeners
from chatmq.core.config import Settings
from chatmq.core.netutil import free_port
from tests.broker.conftest import PASSWORDS
from tests.broker.inproc import OURS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, as an operator would make one)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _connect(port: int, transport: str, cert: Path | str | None) -> Any:
    """CONNACK reason from a connection trusting ``cert`` ("system": the system CAs only; None: no
    TLS), or the exception raised trying."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"tls-{transport}-{port}", transport=transport)  # type: ignore[arg-type]
    client.username_pw_set("alice", PASSWORDS["alice"])
    if cert is not None:
        client.tls_set(ca_certs=None if cert == "system" else str(cert), cert_reqs=ssl.CERT_REQUIRED)
    result: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: result.append(reason)
    try:
        client.connect("127.0.0.1", port, keepalive=30)
        for _ in range(100):
            client.loop(0.1)
            if result:
                break
    except (OSError, ssl.SSLError) as exc:
        return exc
    finally:
        client.disconnect()
    return result[0] if result else None


def test_tls_and_secure_websocket_listeners_accept_logins(run_broker: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls_port, wss_port = free_port(), free_port()
    running = run_broker(OURS, mqtt_tls_port=tls_port, ws_tls_port=wss_port, tls_certfile=cert, tls_keyfile=key)
    for port, transport in ((tls_port, "tcp"), (wss_port, "websockets")):
        reason = _connect(port, transport, cert)
        assert reason is not None and not isinstance(reason, Exception) and reason.value == 0, (transport, reason)
    # the plain listener stays plain, and a client that does not trust the certificate is refused
    assert _connect(running.port, "tcp", None).value == 0
    assert isinstance(_connect(tls_port, "tcp", "system"), ssl.SSLError)


def test_a_tls_port_without_certificate_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="CHATMQ_TLS_CERTFILE"):
        tls_listeners(Settings(data_dir=tmp_path, mqtt_tls_port=free_port()))
    assert tls_listeners(Settings(data_dir=tmp_path)) == {}
