"""`chatmq up` as a supervisor: the stop order whatever signal reaches whom, nothing the broker holds
lost on Ctrl-C, one stack per data dir, children that die with it, and the restart back-off."""

from __future__ import annotations

import queue
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pexpect
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from redis.backoff import ExponentialBackoff

from chatmq.cli.lifeline import Lifeline
from chatmq.cli.stackinfo import STACK_FILE, read_stack
from chatmq.cli.supervisor import RestartPolicy
from chatmq.core.netutil import port_in_use
from tests.stack import PASSWORD, Stack

pytestmark = pytest.mark.timeout(180)


class Tablet:
    """A device with a persistent session (clean_session=0) that can leave deliveries unacknowledged."""

    def __init__(self, stack: Stack, user: str, *, ack: bool) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}.tablet", clean_session=False,
                                  manual_ack=not ack, reconnect_on_failure=False)
        self.client.username_pw_set(user, PASSWORD)
        self.received: queue.Queue[bytes] = queue.Queue()
        self.subacks: queue.Queue[object] = queue.Queue()
        connack: queue.Queue[object] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: connack.put(reason)
        self.client.on_subscribe = lambda *_a: self.subacks.put(True)
        self.client.on_message = lambda _c, _u, m: self.received.put(m.payload)
        self.client.connect("127.0.0.1", stack.mqtt_port, keepalive=30)
        self.client.loop_start()
        connack.get(timeout=10)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, 1)
        self.subacks.get(timeout=10)

    def bodies(self, count: int, timeout: float = 15.0) -> list[str]:
        import orjson

        return [orjson.loads(self.received.get(timeout=timeout))["body"] for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _in_terminal(stack: Stack) -> pexpect.spawn:
    """`chatmq up` as a terminal's foreground job: its own session with the pty as controlling
    terminal, so Ctrl-C (sendintr) signals its whole process group, as a shell's job control does."""
    command = f"exec {shlex.join(stack.command())} >>{shlex.quote(str(stack.log_path))} 2>&1"
    term = pexpect.spawn("/bin/sh", ["-c", command], env=stack.env(), timeout=60)
    stack.wait_ready()
    return term


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those still alive after ``timeout`` (zombies count as gone: they hold no port or file)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _ports(stack: Stack) -> list[int]:
    recorded = read_stack(stack.data_dir)
    redis_port = int(str(recorded["redis_url"]).rsplit(":", 1)[1].split("/")[0])
    return [stack.mqtt_port, stack.ws_port, stack.http_port, recorded["broker_metrics_port"],
            recorded["bridge_metrics_port"], redis_port]


def _problems(log: str) -> list[str]:
    signs = (" ERROR ", "Traceback", "could not persist")
    return [line for line in log.splitlines() if any(sign in line for sign in signs)]


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack with its own private redis-server, as `make run` starts it."""
    made = Stack(tmp_path / "data", None)
    yield made
    if made.process is not None and made.process.poll() is None:
        made.stop()


def test_ctrl_c_in_a_terminal_stops_in_order_and_the_broker_keeps_what_it_holds(
    private_stack: Stack, tmp_path: Path
) -> None:
    """Ctrl-C signals the terminal's whole foreground group. Redis must still be there when the
    broker writes back what its persistent sessions hold (here: deliveries the device has not
    acknowledged), and those come back after a restart."""
    stack = private_stack
    term = _in_terminal(stack)
    try:
        stack.add_user("ann")
        stack.add_user("ben")
        stack.create_conv("kept", "ann", "ben")
        tablet = Tablet(stack, "ben", ack=True)
        tablet.subscribe("chat/kept/msg")
        tablet.close()  # offline: the broker queues for its session
        with stack.client("ann") as ann:
            for i in range(3):
                ann.send("kept", f"held {i}").result(10)
        slow = Tablet(stack, "ben", ack=False)  # takes the queue, acknowledges nothing: all in flight
        assert slow.bodies(3) == ["held 0", "held 1", "held 2"]
        term.sendintr()
        term.expect(pexpect.EOF, timeout=60)
        term.close()
        slow.client.loop_stop()
    finally:
        if term.isalive():
            term.terminate(force=True)
    log = stack.log()
    assert term.exitstatus == 0, log
    assert _problems(log) == [], log
    assert "broker stopped" in log and log.rstrip().endswith("chatmq stopped"), log
    assert not (stack.data_dir / STACK_FILE).exists()

    again = Stack(stack.data_dir, None).start()  # same data dir: the same Redis files
    try:
        tablet = Tablet(again, "ben", ack=True)
        try:
            assert tablet.bodies(3) == ["held 0", "held 1", "held 2"]
        finally:
            tablet.close()
    finally:
        assert again.stop(signal.SIGINT) == 0, again.log()


@pytest.mark.parametrize("how", ["SIGTERM to the group", "timeout"])
def test_other_ways_to_stop_stop_in_order(private_stack: Stack, how: str) -> None:
    stack = private_stack
    if how == "timeout":  # coreutils timeout signals the command, then its whole process group
        stack.start(wrap=["timeout", "-s", "TERM", "12"])
    else:
        stack.start(new_session=True)
    processes = _descendants(stack.process.pid)  # type: ignore[union-attr]
    if how == "timeout":
        code = stack.process.wait(60)  # type: ignore[union-attr]
        assert code == 124, stack.log()  # timeout's own status once it had to stop the command
    else:
        stack.group_signal(signal.SIGTERM)
        assert stack.process.wait(60) == 0, stack.log()  # type: ignore[union-attr]
    assert _gone(processes, 10) == []
    log = stack.log()
    assert _problems(log) == [], log
    assert log.rstrip().endswith("chatmq stopped"), log


def test_kill_9_of_the_supervisor_takes_every_child_along(private_stack: Stack) -> None:
    stack = private_stack.start()
    processes = _descendants(stack.process.pid)  # type: ignore[union-attr]
    names = " ".join(" ".join(p.cmdline()) for p in processes)
    assert all(part in names for part in ("chatmq.cli broker", "chatmq.cli bridge", "chatmq.cli api", "redis-server"))
    ports = _ports(stack)
    stack.process.kill()  # type: ignore[union-attr]
    stack.process.wait()  # type: ignore[union-attr]
    assert _gone(processes, 30) == [], [p.cmdline() for p in processes]
    assert [port for port in ports if port_in_use("127.0.0.1", port)] == []
    log = stack.log()
    assert "could not persist" not in log, log  # Redis stopped after the broker, even so

    again = Stack(stack.data_dir, None).start()  # the data dir's lock went with the last of them
    assert again.stop() == 0, again.log()


def test_a_second_stack_on_the_same_data_dir_is_refused(stack: Stack, tmp_path: Path) -> None:
    recorded = (stack.data_dir / STACK_FILE).read_text()
    second = Stack(stack.data_dir, stack.redis_url)  # other ports, same data dir
    result = subprocess.run(second.command(), env=second.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "another chatmq stack is running on the data dir" in result.stderr
    assert f"MQTT {stack.mqtt_port}" in result.stderr and "--data-dir" in result.stderr
    assert "chatmq stopped" not in result.stderr
    assert (stack.data_dir / STACK_FILE).read_text() == recorded
    assert stack.http("GET", "/readyz")[0] == 200


def test_up_that_never_started_does_not_say_stopped(stack: Stack, tmp_path: Path) -> None:
    other = Stack(tmp_path / "data", stack.redis_url)
    other.mqtt_port = stack.mqtt_port  # taken
    result = subprocess.run(other.command(), env=other.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {stack.mqtt_port} on 127.0.0.1 is already in use" in result.stderr
    assert "chatmq stopped" not in result.stderr
    assert not (other.data_dir / STACK_FILE).exists()


def test_ctrl_c_while_starting_stops_what_had_started(private_stack: Stack) -> None:
    stack = private_stack
    with stack.log_path.open("ab") as log:
        stack.process = subprocess.Popen(stack.command(), env=stack.env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "started private redis-server" not in stack.log():  # the broker takes a second more
        assert time.monotonic() < deadline and stack.process.poll() is None, stack.log()
        time.sleep(0.02)
    processes = _descendants(stack.process.pid)
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(60) == 0, stack.log()
    assert _gone(processes, 10) == []
    log = stack.log()
    assert "chatmq up: mqtt://" not in log, "came up before the signal: this test needs a slower start"
    assert "chatmq stopped what it had started" in log and "chatmq stopped\n" not in log, log
    assert _problems(log) == [], log
    assert not (stack.data_dir / STACK_FILE).exists()


def test_a_crashing_child_comes_back_within_the_policy_back_off(stack: Stack, unique: Callable[[str], str]) -> None:
    supervisor = psutil.Process(stack.process.pid)  # type: ignore[union-attr]

    def bridge() -> psutil.Process:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for child in supervisor.children():
                if "chatmq.cli bridge" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                    return child
            time.sleep(0.05)
        raise AssertionError(f"no bridge came back:\n{stack.log()}")

    before = stack.log().count("bridge exited with code -9")
    for _ in range(3):  # in a row, each time well before it could count as stable
        victim = bridge()
        victim.kill()
        victim.wait(10)
    bridge()
    lines = [line for line in stack.log().splitlines() if "bridge exited with code -9" in line][before:]
    delays = [line.rsplit("restarting in ", 1)[1] for line in lines]
    assert delays == ["0.25 s", "0.5 s", "1 s"], lines
    alice, bob, conv = unique("alice"), unique("bob"), unique("conv")
    stack.add_user(alice)
    stack.add_user(bob)
    stack.create_conv(conv, alice, bob)
    with stack.client(alice) as client:
        assert client.send(conv, "after three crashes").result(30).ok


def test_restart_policy_backs_off_to_a_cap_and_starts_afresh_after_a_stable_run() -> None:
    restarts = RestartPolicy().restarts()
    assert [restarts.next_delay(ran_for=1) for _ in range(8)] == [0.25, 0.5, 1, 2, 4, 5, 5, 5]
    assert restarts.next_delay(ran_for=10) == 0.25  # it ran long enough: a new series
    assert restarts.next_delay(ran_for=0.1) == 0.5
    custom = RestartPolicy(backoff=ExponentialBackoff(cap=2, base=1), stable_after=60).restarts()
    assert [custom.next_delay(ran_for=30) for _ in range(4)] == [1, 2, 2, 2]


def test_the_keeper_stops_its_command_once_every_dependent_has_exited() -> None:
    lifeline = Lifeline()
    kept = lifeline.spawn_kept(["sleep", "60"])
    dependent = lifeline.spawn(["sleep", "1"])
    keeper = psutil.Process(kept.pid)
    deadline = time.monotonic() + 10
    while not keeper.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    [sleeper] = keeper.children()
    lifeline.close()  # as the supervisor's end closes when it dies
    time.sleep(0.5)
    assert kept.poll() is None, "the keeper stopped while a dependent still ran"
    dependent.wait(10)
    assert kept.wait(10) is not None
    assert _gone([sleeper], 5) == []
