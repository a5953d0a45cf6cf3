"""End a worker process with its parent, enforced by the kernel (``prctl(PR_SET_PDEATHSIG)``, Linux).

A server's main process can be killed with SIGKILL, which it cannot pass on: without this its
forked workers would live on as orphans, serving requests, holding the port and every inherited
file descriptor (the data dir's lock among them). The worker gets ``sig`` (SIGTERM: its own clean
shutdown) the moment its parent dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask for ``sig`` when the parent dies; if ``parent_pid`` is already gone, exit now.
    Call it before the process starts serving. Returns False where prctl does not exist (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent_pid:
        # The parent died before prctl took effect. This process has not started serving yet, so
        # there is nothing to shut down cleanly, and the server's own signal handlers may not run
        # their shutdown before it serves: leave at once.
        os._exit(0)
    return True
