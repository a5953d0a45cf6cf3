"""docker-compose.yml and the Dockerfile, checked without Docker (it cannot run here).

The file is validated against the official Compose Specification schema (the copy check-jsonschema
vendors and keeps current), then against chatmq's own invariants: every variable it sets is a real
Settings field, every dependency is health-checked, state lives in volumes. The healthcheck
commands themselves are run against real sockets, Redis and HTTP servers, so a healthcheck that
could never pass (or never fail) is caught here rather than in a deployment.
"""

from __future__ import annotations

import configparser
import copy
import fnmatch
import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatmq.cli.main import cli
from chatmq.core.config import Settings

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

CHATMQ_SERVICES = ("broker", "bridge", "notifier", "api")
STATEFUL = {"mongo": "/data/db", "redis": "/data"}
PUBLISHED = {"broker": {1883, 8083}, "api": {8080}}
ENV_PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, enough to resolve what our file uses."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = env.get(name)
        if op.endswith("?") and (value is None or (op == ":?" and value == "")):
            raise LookupError(arg or f"{name} is required")
        if op.endswith("-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return _VAR.sub(sub, value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        spec = entry if isinstance(entry, str) else str(entry["target"])
        ports.add(int(spec.rsplit(":", 1)[-1].split("/")[0]))
    return ports


def _healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD", "healthchecks use the exec form"
    return list(test[1:])


def _run_python_healthcheck(argv: list[str], old: str = "", new: str = "", **env: str) -> int:
    """Run a ``python -c`` healthcheck with this interpreter, optionally retargeting a port."""
    assert argv[:2] == ["python", "-c"], argv
    code = argv[2]
    if old:
        assert old in code, f"healthcheck does not mention {old}: {code}"
        code = code.replace(old, new)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
    )
    return proc.returncode


# ---------------------------------------------------------------------------------------------
# The Compose Specification


def test_compose_file_matches_the_compose_spec() -> None:
    result = _schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def _typo_in_service(doc: dict[str, Any]) -> None:
    doc["services"]["api"]["helthcheck"] = doc["services"]["api"].pop("healthcheck")


def _bad_condition(doc: dict[str, Any]) -> None:
    doc["services"]["bridge"]["depends_on"]["broker"]["condition"] = "service_ready"


def _bad_healthcheck_field(doc: dict[str, Any]) -> None:
    doc["services"]["mongo"]["healthcheck"]["every"] = "5s"


def _unknown_top_level(doc: dict[str, Any]) -> None:
    doc["service"] = doc["services"]


@pytest.mark.parametrize("breakage", [_typo_in_service, _bad_condition, _bad_healthcheck_field, _unknown_top_level])
def test_schema_check_rejects_broken_variants(breakage: Any, compose: dict[str, Any], tmp_path: Path) -> None:
    """The schema check above is only worth something if it fails on a real mistake."""
    broken = copy.deepcopy(compose)
    breakage(broken)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    result = _schema_check(path)
    assert result.returncode == 1, result.stdout + result.stderr


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


# ---------------------------------------------------------------------------------------------
# chatmq's own invariants


def test_chatmq_services_build_from_the_dockerfile_and_run_their_role(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"mongo", "redis", *CHATMQ_SERVICES}
    for name in CHATMQ_SERVICES:
        service = services[name]
        build = service["build"]
        context = ROOT / build["context"]
        assert context.resolve() == ROOT, name
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
        command = service["command"]
        assert command == [name], f"{name} must run `chatmq {name}`"
        assert name in cli.commands, f"`chatmq {name}` is not a CLI command"


def test_environment_names_are_settings_fields(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name, service in compose["services"].items():
        env = _environment(service)
        if name not in CHATMQ_SERVICES:
            assert not any(key.startswith(ENV_PREFIX) for key in env), name
            continue
        for key in env:
            assert key.startswith(ENV_PREFIX), f"{name}: {key} is not a chatmq setting"
            field = key.removeprefix(ENV_PREFIX).lower()
            assert field in fields, f"{name}: {key} names no field of chatmq.core.config.Settings"


def test_environment_wires_the_services_together(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    for name in CHATMQ_SERVICES:
        raw = _environment(services[name])
        assert raw["CHATMQ_SECRET_KEY"] == "${CHATMQ_SECRET_KEY:?set CHATMQ_SECRET_KEY}", name
        with pytest.raises(LookupError, match="set CHATMQ_SECRET_KEY"):
            _interpolate(raw["CHATMQ_SECRET_KEY"], {})

        host_env = {"CHATMQ_SECRET_KEY": "s3cret"}
        for key in list(Settings.model_fields):
            monkeypatch.delenv(ENV_PREFIX + key.upper(), raising=False)
        for key, value in raw.items():
            monkeypatch.setenv(key, _interpolate(value, host_env))
        settings = Settings()

        assert settings.resolved_store_url == "mongodb://mongo:27017/chatmq"
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.broker_host == "broker" and settings.broker_host in services
        assert settings.resolved_broker_port in _container_ports(services["broker"])
        assert settings.host == "0.0.0.0"
        assert settings.load_secret() == "s3cret"
        assert settings.log_level == "INFO"
        for url in (settings.resolved_store_url, settings.redis_url):
            host = url.split("://", 1)[1].split(":", 1)[0]
            assert host in services, f"{name}: {url} points at no compose service"


def test_dependencies_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert spec == {"condition": "service_healthy"}, f"{name} -> {target}"
            assert "healthcheck" in services[target], f"{name} waits on {target}, which has no healthcheck"
    for name in CHATMQ_SERVICES:
        deps = set(services[name].get("depends_on", {}))
        assert {"mongo", "redis"} <= deps, f"{name} must wait for its store and Redis"
    assert "broker" in services["bridge"]["depends_on"]


def test_stateful_services_keep_data_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, target in STATEFUL.items():
        mounts = {}
        for volume in compose["services"][name]["volumes"]:
            source, _, rest = volume.partition(":")
            mounts[rest.split(":")[0]] = source
        assert target in mounts, f"{name} keeps no volume at {target}"
        assert mounts[target] in declared, f"{name}: {mounts[target]} is not a named volume"


def test_published_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert _container_ports(service) == PUBLISHED.get(name, set()), name
    env = _environment(services["broker"])
    assert {int(env["CHATMQ_MQTT_PORT"]), int(env["CHATMQ_WS_PORT"])} == PUBLISHED["broker"]
    assert {int(_environment(services["api"])["CHATMQ_HTTP_PORT"])} == PUBLISHED["api"]


# ---------------------------------------------------------------------------------------------
# The healthchecks, run for real


def test_stateful_healthchecks_ask_the_server_itself(compose: dict[str, Any]) -> None:
    mongo = " ".join(_healthcheck_argv(compose["services"]["mongo"]))
    assert mongo.startswith("mongosh") and "ping" in mongo
    assert _healthcheck_argv(compose["services"]["redis"]) == ["redis-cli", "ping"]


# Each chatmq service is health-checked on its own /readyz: the API on its HTTP port, the broker
# and the bridge on their metrics ports (chatmq.core.opsserver).
READYZ_PORT_SETTING = {"broker": "CHATMQ_BROKER_METRICS_PORT", "bridge": "CHATMQ_BRIDGE_METRICS_PORT",
                       "notifier": "CHATMQ_NOTIFIER_METRICS_PORT",
                       "api": "CHATMQ_HTTP_PORT"}


class _Probe(http.server.BaseHTTPRequestHandler):
    status = 200
    path_answered = "/readyz"

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == self.path_answered else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[int, type[_Probe]]]:
    handler = type("Handler", (_Probe,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name", CHATMQ_SERVICES)
def test_chatmq_healthchecks_require_readyz_200(
    name: str, compose: dict[str, Any], probe_server: tuple[int, type[_Probe]]
) -> None:
    service = compose["services"][name]
    argv = _healthcheck_argv(service)
    port_value = _environment(service)[READYZ_PORT_SETTING[name]]
    assert f"127.0.0.1:{port_value}/readyz" in argv[2], f"{name} must probe its own /readyz"
    port, handler = probe_server
    assert _run_python_healthcheck(argv, port_value, str(port)) == 0
    handler.status = 503
    assert _run_python_healthcheck(argv, port_value, str(port)) != 0
    handler.status, handler.path_answered = 200, "/healthz"  # liveness alone is not enough
    assert _run_python_healthcheck(argv, port_value, str(port)) != 0


def test_metrics_ports_stay_on_the_compose_network(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["broker"])
    metrics_ports = {int(env["CHATMQ_BROKER_METRICS_PORT"]), int(env["CHATMQ_BRIDGE_METRICS_PORT"]),
                     int(env["CHATMQ_NOTIFIER_METRICS_PORT"])}
    assert all(port > 0 for port in metrics_ports) and len(metrics_ports) == 3
    published = set().union(*PUBLISHED.values())
    assert not metrics_ports & published


# ---------------------------------------------------------------------------------------------
# The image


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def test_dockerfile_installs_the_project_and_runs_chatmq_unprivileged() -> None:
    instructions = _dockerfile_instructions()
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    assert stages[-1] == "python:3.11-slim", "the image that runs is the Python one"
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert re.search(r"pip install [^&]*/tmp/chatmq-src\[server\]", runs), "the image must pip install the server"

    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1] not in ("root", "0"), "services must not run as root"
    entry_index = next(i for i, (kw, _) in enumerate(instructions) if kw == "ENTRYPOINT")
    user_index = max(i for i, (kw, _) in enumerate(instructions) if kw == "USER")
    assert user_index < entry_index

    entrypoint = yaml.safe_load(instructions[entry_index][1])
    assert entrypoint == ["chatmq"], "exec form, so chatmq receives SIGTERM itself"
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    assert re.search(r"^\s*chatmq\s*=\s*chatmq\.cli\.entry:main\s*$", scripts, re.M)

    exposed = {int(p) for kw, rest in instructions if kw == "EXPOSE" for p in rest.split()}
    assert exposed == set().union(*PUBLISHED.values())


def test_image_serves_the_web_app_built_from_the_lockfile() -> None:
    instructions = _dockerfile_instructions()
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert "npm ci" in runs and "node build.js" in runs, "the web app is built from web/package-lock.json"
    copied = [rest.split() for kw, rest in instructions if kw == "COPY" and rest.startswith("--from=web")]
    assert copied and copied[0][-1] == "/opt/chatmq/web"
    env = " ".join(rest for kw, rest in instructions if kw == "ENV")
    assert "CHATMQ_WEB_DIR=/opt/chatmq/web" in env


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packages = _setup_cfg()["options.packages.find"]["include"].split()
    needed = ["setup.cfg", "pyproject.toml", "README.md"] + [p for p in packages if "*" not in p]
    for path in needed:
        for pattern in patterns:
            assert not fnmatch.fnmatch(path, pattern.strip("/")), f".dockerignore {pattern!r} drops {path}"
    for must_skip in (".venv", ".git", "data", "tests"):
        assert must_skip in patterns, f"{must_skip} must stay out of the build context"
