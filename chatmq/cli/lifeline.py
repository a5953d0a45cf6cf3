"""The processes of one ``chatmq up`` end with it, in dependency order, however it ends.

Two mechanisms, both enforced by the kernel rather than by the supervisor staying alive:

- Every child asks for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux), so a
  kill -9 of ``chatmq up`` stops the broker, bridge and API through their own clean shutdown, as
  Ctrl-C does. (The API's own workers end with its main process: chatmq/core/parentdeath.py.)
- The private redis-server must outlive them: the broker writes its sessions to Redis as it stops.
  It runs under a keeper (``python -m chatmq.lifeline``) that holds the read end of a pipe whose
  write end the supervisor and every other child hold. The kernel reports EOF on that pipe once all
  of them have exited; the keeper then stops Redis. It also stops it when asked (SIGTERM, the normal
  shutdown) and, as a last resort, ``--grace`` seconds after the supervisor died.

``hold`` fds (the data dir's lock) are handed to every process, so the lock is held until the last
one has exited.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from chatmq.core.parentdeath import end_with_parent

STOP_TIMEOUT_S = 10.0


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when its parent dies
    (chatmq.core.parentdeath); None where prctl does not exist (not Linux). The parent must spawn from
    the thread that lives as long as it does (the main thread): PDEATHSIG follows the thread that
    forked."""
    if not sys.platform.startswith("linux"):
        return None
    return partial(end_with_parent, os.getpid(), sig)


class Lifeline:
    """The pipe that ties the processes of one stack together (see the module docstring)."""

    def __init__(self, hold: Sequence[int] = ()) -> None:
        self._read, self._write = os.pipe()  # not inheritable: only pass_fds hands them on
        self.hold = tuple(hold)

    def spawn(self, command: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """A dependent child: ends with the supervisor; the keeper waits for it."""
        return subprocess.Popen(
            list(command), pass_fds=(self._write, *self.hold), preexec_fn=die_with_parent(signal.SIGTERM), **popen
        )

    def spawn_kept(self, command: Sequence[str], grace: float = 30.0, **popen: Any) -> subprocess.Popen[bytes]:
        """``command`` under a keeper that stops it once every dependent has exited. In its own
        session, so a terminal's Ctrl-C reaches only the supervisor, which stops things in order."""
        keeper = [sys.executable, "-m", "chatmq.cli.lifeline", "--fd", str(self._read), "--grace", str(grace), "--"]
        return subprocess.Popen(
            keeper + list(command), pass_fds=(self._read, *self.hold),
            preexec_fn=die_with_parent(signal.SIGUSR1), start_new_session=True, **popen,
        )  # fmt: skip

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def keep(fd: int, command: list[str], grace: float) -> int:
    """Run ``command`` until the pipe at ``fd`` reaches EOF, SIGTERM/SIGINT arrive, or ``grace``
    seconds after SIGUSR1 (the supervisor died); then stop it. Returns its exit code."""
    child = subprocess.Popen(command, preexec_fn=die_with_parent(signal.SIGTERM), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    stop_at: list[float] = []
    asked: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: asked.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: asked.append(signum))
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: stop_at.append(time.monotonic() + grace))
    while child.poll() is None and not asked:
        if stop_at and time.monotonic() >= stop_at[0]:
            break
        try:
            readable, _, _ = select.select([fd], [], [], 0.5)
        except InterruptedError:
            continue
        if readable and not os.read(fd, 1):
            break  # every dependent has exited
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chatmq.lifeline", description=keep.__doc__)
    parser.add_argument("--fd", type=int, required=True, help="read end of the stack's lifeline pipe")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to wait once the supervisor died")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to keep")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to keep")
    sys.exit(keep(args.fd, command, args.grace))


if __name__ == "__main__":
    main()
