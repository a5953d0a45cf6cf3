"""A private Mosquitto broker on a free loopback port, for tests that need a standard MQTT broker.

The bridge must work with any MQTT 3.1.1 broker; testing it against Mosquitto (not our own
broker) keeps it honest. The machine's own Mosquitto on 1883 is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from chatmq.cli.processes import terminate
from chatmq.core.netutil import free_port, wait_for_port

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str | None:
    for path in MOSQUITTO_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("mosquitto")


class LocalMosquitto:
    """``start()`` runs it, ``stop()`` ends it; ``restart()`` keeps the port (sessions are lost)."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.workdir = Path(workdir)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> LocalMosquitto:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + self.extra_config
        )
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}; see {self.log_path}")
        return self

    def stop(self) -> None:
        terminate(self.process)

    def restart(self) -> LocalMosquitto:
        self.stop()
        return self.start()
