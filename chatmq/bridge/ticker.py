"""A daemon thread that runs one small job on a fixed interval until told to stop.

Background jobs (membership refresh, liveness, presence sweep) fail for the same reasons (a
database blip) and must neither die nor flood the log: a failure is logged once, and so is the
recovery.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, name: str, interval_s: float, job: Callable[[], None]) -> None:
        self.name = name
        self._interval = interval_s
        self._job = job
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> bool:
        """Run the job now; True if it succeeded."""
        try:
            self._job()
        except Exception as exc:
            if not self._failing:
                log.warning("%s failed: %s (retrying every %.1fs)", self.name, exc, self._interval)
                self._failing = True
            return False
        if self._failing:
            log.info("%s recovered", self.name)
            self._failing = False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.run_once()
