"""Private RabbitMQ nodes and clusters for tests and benchmarks: own node names, ports, data dirs, epmd, cookie.

The machine's own RabbitMQ (``rabbit@localhost``: 5672, 15672, 25672, epmd on 4369) is shared and
never touched: every node started here registers with a private ``epmd`` on a free port, uses a
private Erlang cookie (so it cannot talk to the machine's node even by mistake), listens on free
loopback ports only, and keeps its Mnesia/log dirs under the test's temp dir.

Lifecycle, and why it is so careful: ``rabbitmq-server`` is a shell script whose Erlang VM
(``beam.smp``) outlives it, with helpers of its own (``erl_child_setup``, ``inet_gethost``, the disk
monitor's ``sh``). Each node therefore runs in a session of its own (``start_new_session``); ``stop()``
asks ``rabbitmqctl stop`` first (a clean shutdown), then kills every process still in that session —
the PIDs we started and theirs, nothing found by name. ``kill()`` is the crash: SIGKILL to the whole
session at once (what ``kill -9`` of the VM does to a node, minus the delay).

As root the node runs as the ``rabbitmq`` user (what the packaged scripts do; its dirs are chowned to
it); as any other user it runs as that user.

    with RabbitCluster(size=3) as cluster:
        node = cluster.nodes[0]
        node.mqtt_port, node.ws_port, node.management_port, node.ctl("list_queues")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from chatmq.cli.processes import terminate
from chatmq.core.netutil import free_port, wait_for_port

RABBIT_LIB = Path("/usr/lib/rabbitmq/bin")  # Debian: the real scripts; /usr/sbin/* wrap them in `su`
SERVER = RABBIT_LIB / "rabbitmq-server"
CTL = RABBIT_LIB / "rabbitmqctl"
EPMD_PATHS = ("/usr/lib/erlang/bin/epmd", "/usr/bin/epmd")
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_web_mqtt", "rabbitmq_auth_backend_http", "rabbitmq_management")
USER = "guest"  # the default administrator; RabbitMQ lets it in from loopback only
PASSWORD = "guest"


def unavailable_reason() -> str | None:
    """Why a private RabbitMQ node cannot run here (None when it can): the reason tests skip with."""
    if not SERVER.exists() or not CTL.exists():
        return f"rabbitmq-server is not installed ({SERVER} missing): run 'make install' as root on Debian"
    if _epmd_binary() is None:
        return "epmd (Erlang's port mapper) is not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("rabbitmq")
        except KeyError:
            return "running as root but there is no 'rabbitmq' user to run the node as"
    return None


def _epmd_binary() -> str | None:
    for path in EPMD_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("epmd")


@dataclass(frozen=True)
class AuthHTTP:
    """Point the node at an HTTP authentication/authorisation service (rabbitmq_auth_backend_http).

    Each field is a full URL. The internal database comes first in the chain, so ``guest`` (the
    tests' administrator, for rabbitmqctl and the management API) logs in without asking chatmq;
    every other login goes to the HTTP service."""

    user: str
    vhost: str
    resource: str
    topic: str
    method: str = "post"

    def config(self) -> str:
        return (
            "auth_backends.1 = internal\n"
            "auth_backends.2 = http\n"
            f"auth_http.http_method = {self.method}\n"
            f"auth_http.user_path = {self.user}\n"
            f"auth_http.vhost_path = {self.vhost}\n"
            f"auth_http.resource_path = {self.resource}\n"
            f"auth_http.topic_path = {self.topic}\n"
        )

    @classmethod
    def under(cls, base_url: str, method: str = "post") -> AuthHTTP:
        """``{base}/user``, ``{base}/vhost``, ``{base}/resource``, ``{base}/topic``."""
        base = base_url.rstrip("/")
        return cls(f"{base}/user", f"{base}/vhost", f"{base}/resource", f"{base}/topic", method)


class Epmd:
    """A private Erlang port mapper on a free loopback port (nodes and rabbitmqctl find each other
    through it; the machine's epmd on 4369 never sees our nodes)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Epmd:
        binary = _epmd_binary()
        if binary is None:
            raise RuntimeError("epmd is not installed")
        env = {**os.environ, "ERL_EPMD_ADDRESS": "127.0.0.1"}
        self.process = subprocess.Popen(
            [binary, "-port", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_for_port("127.0.0.1", self.port, 10):
            self.stop()
            raise RuntimeError(f"epmd did not listen on {self.port}")
        return self

    def stop(self) -> None:
        terminate(self.process)


class RabbitNode:
    """One RabbitMQ node ``{name}@localhost``. ``start()`` launches it and waits until it serves MQTT;
    ``stop()`` is clean then thorough; ``kill()`` is a crash; ``start()`` again restarts it on the same
    ports and data (a cluster member rejoins by itself)."""

    def __init__(self, workdir: Path, name: str, epmd: Epmd, cookie: str, *,
                 plugins: Sequence[str] = PLUGINS, auth_http: AuthHTTP | None = None,
                 extra_config: str = "") -> None:
        self.workdir = Path(workdir).resolve()
        self.name = name
        self.node = f"{name}@localhost"
        self.epmd = epmd
        self.cookie = cookie
        self.plugins = tuple(plugins)
        self.auth_http = auth_http
        self.extra_config = extra_config
        self.host = "127.0.0.1"
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.mqtt_port = free_port()
        self.ws_port = free_port()
        self.management_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._uid, self._gid = _run_as()

    # ---- files ---------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def config_file(self) -> Path:
        return self.workdir / "rabbitmq.conf"

    def config(self) -> str:
        plugins = set(self.plugins)
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            "loopback_users = none",
            "log.file.level = info",
            "log.console = false",
            # A test machine's disk is often nearly full of other people's data; do not block publishers.
            "disk_free_limit.absolute = 50MB",
        ]
        if "rabbitmq_mqtt" in plugins:
            lines += [
                f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}",
                "mqtt.allow_anonymous = false",
                "mqtt.vhost = /",
                "mqtt.exchange = amq.topic",
                # Durable sessions (clean_session=false, e.g. the bridge's) in replicated quorum queues:
                # what RabbitMQ 3.10's MQTT guide recommends for sessions that must survive a node.
                "mqtt.durable_queue_type = quorum",
            ]
        if "rabbitmq_web_mqtt" in plugins:
            lines += ["web_mqtt.tcp.ip = 127.0.0.1", f"web_mqtt.tcp.port = {self.ws_port}"]
        if "rabbitmq_management" in plugins:
            lines += ["management.tcp.ip = 127.0.0.1", f"management.tcp.port = {self.management_port}"]
        text = "\n".join(line for line in lines if line) + "\n"
        if self.auth_http is not None:
            text += self.auth_http.config()
        return text + self.extra_config

    def _write_files(self) -> None:
        for path in (self.workdir, self.home, self.log_dir, self.workdir / "mnesia"):
            path.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        self.config_file.write_text(self.config())
        (self.workdir / "enabled_plugins").write_text("[" + ",".join(self.plugins) + "].\n")
        (self.workdir / "rabbitmq-env.conf").write_text("# private test node: no machine-wide settings\n")
        for path in (self.workdir, *self.workdir.rglob("*")):
            os.chown(path, self._uid, self._gid)

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **base,
            "HOME": str(self.home),  # the private cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.config_file),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_PID_FILE": str(self.workdir / "node.pid"),
            "ERL_EPMD_PORT": str(self.epmd.port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    # ---- lifecycle -----------------------------------------------------------------------------
    def launch(self) -> RabbitNode:
        """Start the node without waiting (``wait_ready()`` waits): a cluster boots its nodes at once."""
        if self.running:
            raise RuntimeError(f"{self.node} is already running")
        self._write_files()
        out = open(self.log_dir / "startup.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [str(SERVER)], env=self.env(), cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, user=self._uid, group=self._gid,
                extra_groups=[] if os.geteuid() == 0 else None,
            )
        finally:
            out.close()
        _STARTED_SESSIONS.add(self.process.pid)
        return self

    def wait_ready(self, timeout: float = 90.0) -> RabbitNode:
        """Until the node has booted and its MQTT listener accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.node} exited while starting:\n{self.startup_log()}")
            left = max(1.0, deadline - time.monotonic())
            result = self.ctl_result("await_startup", "--timeout", str(int(min(left, 30))), timeout=left + 5)
            if result.returncode == 0:
                break
            time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"{self.node} did not boot in {timeout:.0f} s:\n{self.startup_log()}")
        if "rabbitmq_mqtt" in self.plugins and not wait_for_port(self.host, self.mqtt_port, 20):
            self.stop()
            raise RuntimeError(f"{self.node} booted but MQTT is not on {self.mqtt_port}")
        return self

    def start(self, timeout: float = 90.0) -> RabbitNode:
        return self.launch().wait_ready(timeout)

    @property
    def running(self) -> bool:
        return bool(self._session_pids())

    def stop(self, timeout: float = 60.0) -> None:
        """``rabbitmqctl stop`` (a clean shutdown; waits for the VM), then every PID of the session."""
        if self._session_pids():
            self.ctl_result("stop", timeout=timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to every process of the node's session at once: a crash, nothing flushed."""
        for _ in range(50):
            pids = self._session_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        if self.process is not None:
            self.process.wait(10)
        left = self._session_pids()
        if left:
            raise RuntimeError(f"{self.node}: processes {sorted(left)} survive SIGKILL")

    @property
    def vm_pid(self) -> int | None:
        """The node's Erlang VM (``beam.smp``): where its CPU time goes."""
        for pid in self._session_pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam"):
                    return pid
            except OSError:
                continue
        return None

    def _session_pids(self) -> set[int]:
        """Every live process whose session is the node's (the script, beam.smp and its helpers)."""
        if self.process is None:
            return set()
        return session_members(self.process.pid)

    # ---- rabbitmqctl ---------------------------------------------------------------------------
    def ctl_result(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = self.env()
        port = str(free_port())  # the CLI's own distribution port: never the shared 35672..35682 range
        env["RABBITMQ_CTL_DIST_PORT_MIN"] = env["RABBITMQ_CTL_DIST_PORT_MAX"] = port
        try:
            return subprocess.run(
                [str(CTL), "-n", self.node, *args], env=env, capture_output=True, text=True,
                timeout=timeout, user=self._uid, group=self._gid,
                extra_groups=[] if os.geteuid() == 0 else None, cwd=self.workdir,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout} s")

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <this node> args``; its stdout, or RuntimeError with its stderr."""
        result = self.ctl_result(*args, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node} failed "
                               f"({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def add_user(self, user: str, password: str) -> None:
        """An internal user with every permission on ``/`` (a cluster shares its users: ask any node).
        For runs without chatmq's HTTP auth backend; with it, chatmq's own users log in."""
        self.ctl("add_user", "--", user, password)
        self.ctl("set_permissions", "-p", "/", "--", user, ".*", ".*", ".*")

    def add_users(self, passwords: Mapping[str, str]) -> None:
        """Many internal users at once (one ``import_definitions``; ``add_user`` costs a CLI start each)."""
        users = [{"name": user, "password_hash": _password_hash(password),
                  "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
                 for user, password in passwords.items()]
        permissions = [{"user": user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                       for user in passwords]
        path = self.workdir / "users.json"
        path.write_text(json.dumps({"users": users, "permissions": permissions}))
        os.chown(path, self._uid, self._gid)
        self.ctl("import_definitions", str(path), timeout=120)
        path.unlink()

    def startup_log(self, tail: int = 40) -> str:
        texts = []
        for path in sorted(self.log_dir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            texts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(texts)


def session_members(sid: int) -> set[int]:
    """PIDs of live (not zombie) processes in session ``sid``, read from /proc."""
    members = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            members.add(int(entry))
    return members


def leftover_processes() -> dict[int, str]:
    """Live processes of the nodes *this process* started (their sessions, or a command line naming
    one of its node dirs): after every node is stopped there must be none. Other test runs' nodes
    on the same machine are not ours and not counted."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        if int(fields[3]) in _STARTED_SESSIONS or any(workdir in cmdline for workdir in _WORKDIRS):
            found[int(entry)] = cmdline
    return found


_STARTED_SESSIONS: set[int] = set()  # every node session this process started
_WORKDIRS: set[str] = set()  # every node dir this process made


def _password_hash(password: str) -> str:
    """RabbitMQ's internal SHA-256 password hash: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _run_as() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    entry = pwd.getpwnam("rabbitmq")
    return entry.pw_uid, entry.pw_gid


class RabbitCluster:
    """``size`` nodes booted together, nodes 2.. joined to node 1 with rabbitmqctl (disc nodes).

    ``auth_http`` and ``extra_config`` apply to every node. Use as a context manager, or call
    ``start()`` and (always) ``stop()``."""

    def __init__(self, size: int = 1, *, plugins: Sequence[str] = PLUGINS, auth_http: AuthHTTP | None = None,
                 extra_config: str = "", prefix: str = "chatmq", keep: bool = False) -> None:
        # Not under pytest's tmp_path: that sits in root-only (0700) dirs the rabbitmq user cannot enter.
        self.workdir = Path(tempfile.mkdtemp(prefix="chatmq-rabbit-")).resolve()
        os.chmod(self.workdir, 0o755)
        _WORKDIRS.add(f"{self.workdir}/")
        self.keep = keep
        self.epmd = Epmd()
        cookie = secrets.token_hex(16).upper()
        tag = secrets.token_hex(3)
        self.nodes = [
            RabbitNode(self.workdir / f"node{i}", f"{prefix}-{tag}-{i}", self.epmd, cookie,
                       plugins=plugins, auth_http=auth_http, extra_config=extra_config)
            for i in range(1, size + 1)
        ]

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        try:
            self.epmd.start()
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.node)
                node.ctl("start_app")
                node.wait_ready(timeout)
            if len(self.nodes) > 1:
                self.wait_members(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def running_members(self, via: RabbitNode | None = None) -> set[str]:
        """Node names the cluster reports running (asked of ``via``, or the first running node)."""
        asker = via or next(n for n in self.nodes if n.running)
        status = json.loads(asker.ctl("cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))

    def wait_members(self, nodes: Iterable[RabbitNode], timeout: float = 60.0) -> None:
        want = {n.node for n in nodes}
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                seen = self.running_members()
            except RuntimeError:
                seen = set()
            if want <= seen:
                return
            time.sleep(0.5)
        raise RuntimeError(f"cluster runs {sorted(seen)}, expected {sorted(want)}")

    def stop(self) -> None:
        """Every node (clean, then every PID), then the private epmd; raises if anything survives."""
        errors = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:  # stop the others, report the first at the end
                errors.append(exc)
        self.epmd.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def urls(self) -> Mapping[str, str]:
        return {n.node: f"mqtt://{n.host}:{n.mqtt_port}" for n in self.nodes}
