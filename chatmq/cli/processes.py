"""Child-process helpers shared by the supervisor, the private Redis and the test brokers."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = 5.0, sig: int = signal.SIGTERM) -> bool:
    """Ask a child to stop, kill it if it has not within ``timeout``. True if it stopped by itself."""
    if process is None or process.poll() is not None:
        return True
    process.send_signal(sig)
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
