"""A private Mosquitto with the dynamic security plugin, on a free loopback port."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

from chatmq.cli.processes import terminate
from chatmq.core.netutil import free_port, wait_for_port
from tests.mosquitto import mosquitto_binary

PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
)
ADMIN, ADMIN_PASSWORD = "dynsec-admin", "dynsec-admin-pw-7f3a"


def dynsec_plugin() -> str | None:
    return next((p for p in PLUGIN_PATHS if Path(p).exists()), None)


def available() -> bool:
    return bool(mosquitto_binary() and dynsec_plugin() and shutil.which("mosquitto_ctrl"))


class DynsecMosquitto:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"mqtt://{ADMIN}:{ADMIN_PASSWORD}@{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> DynsecMosquitto:
        if not available():  # scripts/ensure-deps installs them: a missing one is a set-up error, not a skip
            raise RuntimeError("needs mosquitto, its dynamic security plugin and mosquitto_ctrl "
                               "(apt-get install mosquitto mosquitto-clients)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = self.workdir / "dynamic-security.json"
        subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(state), ADMIN, ADMIN_PASSWORD],
                       check=True, capture_output=True, timeout=30)
        log = self.workdir / "mosquitto.log"
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} {self.host}\n"
            # Run as whoever runs the tests: as root, Mosquitto would switch to the 'mosquitto'
            # user, who cannot read the test's private directory.
            f"user {getpass.getuser()}\n"
            "allow_anonymous false\npersistence false\n"
            f"plugin {dynsec_plugin()}\nplugin_opt_config_file {state}\n"
            f"log_dest file {log}\nlog_type error\nlog_type warning\nlog_type notice\n"
        )
        self.process = subprocess.Popen([str(mosquitto_binary()), "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise RuntimeError(f"mosquitto did not start; see {log}")
        return self

    def stop(self) -> None:
        terminate(self.process)
