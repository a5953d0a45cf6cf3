"""deploy/docker-compose.rabbitmq.yml (chatmq on a three-node RabbitMQ cluster), checked without Docker.

The Compose Specification schema first, then what makes the deployment hang together: the nodes
form one cluster (their names are the classic-config peers), they load the plugins chatmq needs and
the config the one-shot job renders (through the real `chatmq rabbitmq-config`, with the file's own
arguments and environment), and RabbitMQ 3.10.8's own configuration schemas accept both config
files as the node would read them; RabbitMQ's auth backend reaches the API's routes through the
proxy with the secret the API holds; every URL a chatmq service is given names a service listening
there; the proxy's servers are those services; only the proxy is published; the healthchecks run
against real servers (Redis for the session guard).
"""

from __future__ import annotations

import copy
import glob
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from chatmq.adapters.rabbitmq.config import HOOK_USER, HOOKS_PATH, PLUGINS
from chatmq.api.brokerhooks.rabbitmq import bp as rabbitmq_blueprint
from chatmq.api.health import bp as health_blueprint
from chatmq.cli.main import cli
from chatmq.cli.rabbitmq_cmd import guard_name
from chatmq.core.config import Settings
from chatmq.core.membershipsync import AppliedVersions
from chatmq.core.partitions import check_worker_id
from tests.test_compose import (
    ENV_PREFIX,
    _environment,
    _healthcheck_argv,
    _run_python_healthcheck,
    _schema_check,
    probe_server,  # noqa: F401  (a fixture used below)
)
from tests.test_compose_cluster import (
    _HOST_VAR,
    _command,
    _haproxy,
    _option,
    _published,
    _routes,
    assert_no_dependency_cycle,
    assert_only_settings_fields,
    interpolate,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.rabbitmq.yml"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.rabbitmq.cfg"
NODE_CONF = DEPLOY / "rabbitmq" / "rabbitmq.conf"
ENABLED_PLUGINS = DEPLOY / "rabbitmq" / "enabled_plugins"
RABBITMQ_PLUGINS_DIR = "/usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/plugins"

HOST_VARIABLES = {"CHATMQ_SECRET_KEY", "CHATMQ_RABBITMQ_HOOK_SECRET", "RABBITMQ_ERLANG_COOKIE",
                  "RABBITMQ_GUARD_PASSWORD", "CHATMQ_LOG_LEVEL"}  # fmt: skip
REQUIRED_VARIABLES = HOST_VARIABLES - {"CHATMQ_LOG_LEVEL"}
HOST_ENV = {"CHATMQ_SECRET_KEY": "s3cret-key", "CHATMQ_RABBITMQ_HOOK_SECRET": "hook-S3cret_1",
            "RABBITMQ_ERLANG_COOKIE": "c00kie", "RABBITMQ_GUARD_PASSWORD": "guard-Pw_2"}  # fmt: skip
# RabbitMQ's management listener (rabbitmq.conf) and what chatmq's config job renders.
MANAGEMENT_PORT = 15672


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _kind(service: dict[str, Any]) -> str:
    image = str(service.get("image", ""))
    if "build" in service:
        return "chatmq-" + _command(service)[0]
    for prefix, kind in (("rabbitmq:", "rabbitmq"), ("haproxy:", "haproxy"), ("mongo:", "mongo"), ("redis:", "redis")):
        if image.startswith(prefix):
            return kind
    raise AssertionError(f"unknown kind of service: {image}")


def _of_kind(services: dict[str, Any], kind: str) -> list[str]:
    return sorted(name for name, service in services.items() if _kind(service) == kind)


def _is_job(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """container path -> (source, read-only)"""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = str(volume).split(":")
        out[target] = (source, mode == ["ro"])
    return out


def _settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(Settings.model_fields):
        monkeypatch.delenv(ENV_PREFIX + key.upper(), raising=False)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, interpolate(value, HOST_ENV))
    return Settings()


def _conf(text: str) -> dict[str, str]:
    """A sysctl-format rabbitmq.conf as key -> value."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return dict((part.strip() for part in line.split("=", 1)) for line in lines if line)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# The Compose Specification, and the shape


def test_file_matches_the_compose_spec() -> None:
    result = _schema_check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_file(compose: dict[str, Any], tmp_path: Path) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["rabbit-1"]["depends_on"]["rabbitmq-config"]["condition"] = "service_done"
    path = tmp_path / "docker-compose.rabbitmq.yml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    assert _schema_check(path).returncode == 1


def test_every_tier_is_there(services: dict[str, Any]) -> None:
    nodes = _of_kind(services, "rabbitmq")
    assert len(nodes) == 3, "three nodes: a quorum queue keeps working with one of them down"
    assert all(services[n]["image"].startswith("rabbitmq:3.10.") for n in nodes), "3.10 is what tests/rabbit prove"
    assert len(_of_kind(services, "chatmq-bridge")) >= 2
    assert len(_of_kind(services, "chatmq-api")) >= 2
    assert len(_of_kind(services, "chatmq-notifier")) >= 1
    assert len(_of_kind(services, "chatmq-rabbitmq-guard")) == 1, "one session guard per deployment"
    assert len(_of_kind(services, "chatmq-rabbitmq-config")) == 1
    assert not _of_kind(services, "chatmq-broker"), "RabbitMQ is the broker here"
    ids = []
    for name in _of_kind(services, "chatmq-bridge"):
        command = _command(services[name])
        cli.commands["bridge"].make_context("bridge", command[1:])  # raises on an unknown option
        ids.append(check_worker_id(_option(command, "--worker-id")))
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------------------------
# The RabbitMQ nodes


def test_nodes_form_one_cluster_by_classic_config(services: dict[str, Any]) -> None:
    conf = _conf(NODE_CONF.read_text())
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    peers = {value for key, value in conf.items() if key.startswith("cluster_formation.classic_config.nodes.")}
    names, cookies = set(), set()
    for name in _of_kind(services, "rabbitmq"):
        env = _environment(services[name])
        node = env["RABBITMQ_NODENAME"]
        assert node == f"rabbit@{services[name]['hostname']}" and services[name]["hostname"] == name, \
            "short node names: the host part is the service's hostname, which the other nodes resolve"
        names.add(node)
        cookies.add(env["RABBITMQ_ERLANG_COOKIE"])
        assert "RABBITMQ_USE_LONGNAME" not in env
    assert peers == names
    assert cookies == {"${RABBITMQ_ERLANG_COOKIE:?set RABBITMQ_ERLANG_COOKIE}"}, "one cookie for every node"
    for name in _of_kind(services, "rabbitmq"):  # blank nodes boot in parallel; none waits for another
        assert not set(services[name].get("depends_on", {})) & names


def test_nodes_load_the_plugins_and_both_config_files(services: dict[str, Any]) -> None:
    text = ENABLED_PLUGINS.read_text().strip()
    assert re.fullmatch(r"\[[a-z_,]+\]\.", text), "an Erlang list of atoms, ending with a dot"
    assert set(text[1:-2].split(",")) == set(PLUGINS)
    (job,) = _of_kind(services, "chatmq-rabbitmq-config")
    output = Path(_option(_command(services[job]), "--output"))
    job_volume, read_only = _mounts(services[job])[str(output.parent)]
    assert not read_only
    for name in _of_kind(services, "rabbitmq"):
        mounts = _mounts(services[name])
        assert mounts["/etc/rabbitmq/rabbitmq.conf"] == ("./rabbitmq/rabbitmq.conf", True)
        assert mounts["/etc/rabbitmq/enabled_plugins"] == ("./rabbitmq/enabled_plugins", True)
        assert mounts["/etc/rabbitmq/conf.d"] == (job_volume, True), "the nodes read what the job wrote"
        assert output.suffix == ".conf", "RabbitMQ reads conf.d/*.conf only"
        assert mounts["/var/lib/rabbitmq"][0] == f"{name}-data"
        assert services[name]["depends_on"][job] == {"condition": "service_completed_successfully"}
    assert (COMPOSE_FILE.parent / "rabbitmq" / "rabbitmq.conf").resolve() == NODE_CONF


def _render(services: dict[str, Any], tmp_path: Path) -> tuple[list[str], str]:
    """Run the config job's own command line with its own environment; the file it writes."""
    (job,) = _of_kind(services, "chatmq-rabbitmq-config")
    command = _command(services[job])
    target = tmp_path / Path(_option(command, "--output")).name
    command[command.index("--output") + 1] = str(target)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CHATMQ_DATA_DIR": str(tmp_path)}
    env.update({key: interpolate(value, HOST_ENV) for key, value in _environment(services[job]).items()})
    result = subprocess.run([sys.executable, "-m", "chatmq.cli", *command], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return command, target.read_text()


def test_the_job_renders_chatmq_config_through_the_real_command(
    services: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, text = _render(services, tmp_path)
    conf = _conf(text)
    proxy = _haproxy(HAPROXY_CFG)
    secret = HOST_ENV["CHATMQ_RABBITMQ_HOOK_SECRET"]
    routes = _routes(rabbitmq_blueprint)
    for kind in ("user", "vhost", "resource", "topic"):
        url = urlsplit(conf[f"auth_http.{kind}_path"])
        assert (url.username, url.password) == (HOOK_USER, secret)
        assert url.hostname == "lb" and proxy["binds"][url.port] == "api"
        assert url.path == f"{HOOKS_PATH}/{kind}" and url.path in routes
    assert [conf["auth_backends.1"], conf["auth_backends.2"]] == ["internal", "http"]
    assert conf["mqtt.durable_queue_type"] == "quorum" and conf["mqtt.prefetch"] == "1000"
    assert conf["mqtt.allow_anonymous"] == "false"
    # the API checks the secret RabbitMQ sends: the same value in every chatmq service
    for name in _of_kind(services, "chatmq-api"):
        assert _settings(services[name], monkeypatch).rabbitmq_hook_secret == secret
    # the listeners the job sets are the ports the proxy sends devices to
    backends = proxy["backends"]
    mqtt_port = int(conf["mqtt.listeners.tcp.default"].rsplit(":", 1)[-1])
    assert {port for _, port in backends["rabbitmq_mqtt"]} == {mqtt_port}
    assert {port for _, port in backends["rabbitmq_ws"]} == {int(conf["web_mqtt.tcp.port"])}
    assert "listeners.tcp.default" not in conf, "the job leaves AMQP to rabbitmq.conf"


def _cuttlefish(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """Map config files through RabbitMQ 3.10.8's own schemas, as a node does when it boots."""
    schemas = sorted(glob.glob(f"{RABBITMQ_PLUGINS_DIR}/*/priv/schema/*.schema"))
    listed = ", ".join(f'"{f}"' for f in files)
    program = (
        f"Schema = cuttlefish_schema:files([{', '.join(chr(34) + s + chr(34) for s in schemas)}]),"
        f"case cuttlefish_generator:map(Schema, cuttlefish_conf:files([{listed}])) of"
        "  {error, _, {errorlist, Errors}} -> io:format(\"~p~n\", [Errors]), halt(1);"
        "  Config when is_list(Config) -> io:format(\"~p~n\", [Config]), halt(0) end."
    )
    return subprocess.run(["erl", "-noshell", "-pa", *glob.glob(f"{RABBITMQ_PLUGINS_DIR}/*/ebin"), "-eval", program],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip


@pytest.fixture
def rabbitmq_schemas() -> None:
    if not Path(RABBITMQ_PLUGINS_DIR).is_dir() or shutil.which("erl") is None:
        pytest.fail(f"RabbitMQ 3.10.8 is not installed ({RABBITMQ_PLUGINS_DIR}): run scripts/ensure-deps")


def test_rabbitmq_accepts_both_config_files(services: dict[str, Any], tmp_path: Path, rabbitmq_schemas: None) -> None:
    _, text = _render(services, tmp_path)
    rendered = tmp_path / "50-chatmq.conf"
    assert rendered.read_text() == text
    result = _cuttlefish(tmp_path, NODE_CONF, rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    mapped = re.sub(r"\s+", "", result.stdout)
    peers = re.search(r"\{cluster_nodes,\{\[([^]]*)\],disc\}\}", mapped)
    assert peers and set(peers[1].split(",")) == {f"'rabbit@{n}'" for n in _of_kind(services, "rabbitmq")}
    assert "{durable_queue_type,quorum}" in mapped and "{prefetch,1000}" in mapped
    assert "{cluster_partition_handling,pause_minority}" in mapped
    assert "{disable_metrics_collector,false}" in mapped
    # the same check refuses what a node would refuse
    bad = tmp_path / "60-bad.conf"
    bad.write_text("mqtt.prefetch = lots\nmqtt.no_such_setting = 1\n")
    result = _cuttlefish(tmp_path, NODE_CONF, rendered, bad)
    assert result.returncode == 1 and "mqtt.no_such_setting" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Dependencies and the environment


def test_dependencies_resolve_and_can_be_satisfied(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if _is_job(service):
            assert _kind(service) == "chatmq-rabbitmq-config", name
        else:
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert service.get("restart") in ("unless-stopped", "always"), name
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, it has none"
            elif condition == "service_completed_successfully":
                assert _is_job(services[target]), f"{name} waits for {target} to finish; it never does"
            else:
                assert condition == "service_started", (name, target, condition)
    assert_no_dependency_cycle(services)


def test_chatmq_waits_for_the_store_redis_and_every_node(services: dict[str, Any]) -> None:
    kinds = ("chatmq-api", "chatmq-bridge", "chatmq-rabbitmq-guard")
    for name in (n for kind in kinds for n in _of_kind(services, kind)):
        deps = services[name]["depends_on"]
        for target in ("mongo", "redis", *_of_kind(services, "rabbitmq")):
            assert deps[target] == {"condition": "service_healthy"}, (name, target)
    for name in _of_kind(services, "chatmq-bridge"):  # their login goes through the API's auth backend
        assert set(_of_kind(services, "chatmq-api")) <= set(services[name]["depends_on"])


def test_environment_names_are_settings_fields(services: dict[str, Any]) -> None:
    assert_only_settings_fields(services)


def test_only_known_host_variables_and_the_secrets_are_required() -> None:
    text = COMPOSE_FILE.read_text()
    assert {m["name"] for m in _HOST_VAR.finditer(text)} == HOST_VARIABLES
    for variable in REQUIRED_VARIABLES:
        with pytest.raises(LookupError, match=f"set {variable}"):
            interpolate(text, {k: v for k, v in HOST_ENV.items() if k != variable})


def test_urls_point_at_services_that_listen_there(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    binds = _haproxy(HAPROXY_CFG)["binds"]
    for kind in ("chatmq-api", "chatmq-bridge", "chatmq-notifier", "chatmq-rabbitmq-guard"):
        for name in _of_kind(services, kind):
            settings = _settings(services[name], monkeypatch)
            assert settings.resolved_store_url.startswith("mongodb://mongo:27017/chatmq")
            assert settings.redis_url == "redis://redis:6379/0"
            assert settings.broker_host == "lb" and binds[settings.resolved_broker_port] == "rabbitmq_mqtt"
            assert settings.load_secret() == HOST_ENV["CHATMQ_SECRET_KEY"]
            assert settings.host == "0.0.0.0"
    (guard,) = _of_kind(services, "chatmq-rabbitmq-guard")
    url = urlsplit(_settings(services[guard], monkeypatch).rabbitmq_management_url or "")
    assert url.hostname == "lb" and binds[url.port] == "rabbitmq_management"  # type: ignore[index]
    node_env = _environment(services[_of_kind(services, "rabbitmq")[0]])
    assert url.username == node_env["RABBITMQ_DEFAULT_USER"], "the guard logs in as the nodes' administrator"
    assert url.password == interpolate(node_env["RABBITMQ_DEFAULT_PASS"], HOST_ENV)


# ---------------------------------------------------------------------------------------------
# The proxy, ports and volumes


def test_proxy_servers_are_the_services_and_their_ports(
    services: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _haproxy(HAPROXY_CFG)
    assert set(proxy["backends"]) == {b for b in proxy["binds"].values() if b}
    conf = _conf(_render(services, tmp_path)[1]) | _conf(NODE_CONF.read_text())
    nodes = _of_kind(services, "rabbitmq")
    api_port = {name: _settings(services[name], monkeypatch).http_port for name in _of_kind(services, "chatmq-api")}
    expected = {
        "rabbitmq_mqtt": {(n, int(conf["mqtt.listeners.tcp.default"])) for n in nodes},
        "rabbitmq_ws": {(n, int(conf["web_mqtt.tcp.port"])) for n in nodes},
        "rabbitmq_management": {(n, int(conf["management.tcp.port"])) for n in nodes},
        "api": set(api_port.items()),
    }
    assert {name: set(servers) for name, servers in proxy["backends"].items()} == expected
    assert int(conf["management.tcp.port"]) == MANAGEMENT_PORT
    assert proxy["checks"]["api"] == "/healthz" and "/healthz" in _routes(health_blueprint)


def test_only_the_device_and_app_frontends_are_published(services: dict[str, Any]) -> None:
    proxy = _haproxy(HAPROXY_CFG)
    published = {name: _published(service) for name, service in services.items() if _published(service)}
    assert set(published) == {"lb"}, "only the proxy is reachable from outside"
    assert all(host == container for host, container in published["lb"])
    ports = {container for _, container in published["lb"]}
    assert {proxy["binds"][port] for port in ports} == {"rabbitmq_mqtt", "rabbitmq_ws", "api"}
    assert MANAGEMENT_PORT not in ports, "RabbitMQ's management API stays on the compose network"
    (health_port, path), = proxy["monitor"].items()
    assert f"http://127.0.0.1:{health_port}{path}" in _healthcheck_argv(services["lb"])


def test_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    writers: dict[str, list[str]] = {}
    readers: dict[str, list[str]] = {}
    for name, service in services.items():
        for source, read_only in _mounts(service).values():
            if source.startswith("."):
                assert read_only and (COMPOSE_FILE.parent / source).exists(), f"{name}: {source}"
                continue
            assert source in declared, f"{name}: {source} is not a named volume"
            (readers if read_only else writers).setdefault(source, []).append(name)
    assert set(writers) == declared, "every volume has a writer"
    assert all(len(names) == 1 for names in writers.values()), writers
    (job,) = _of_kind(services, "chatmq-rabbitmq-config")
    assert readers == {"rabbitmq-conf": _of_kind(services, "rabbitmq")}, "the hook secret's file: nodes only"
    assert writers["rabbitmq-conf"] == [job]
    stateful = {*_of_kind(services, "rabbitmq"), "mongo", "redis"}
    assert stateful <= {names[0] for names in writers.values()}


# ---------------------------------------------------------------------------------------------
# Healthchecks run for real


@pytest.mark.parametrize(("kind", "setting"), [("chatmq-bridge", "bridge_metrics_port"),
                                               ("chatmq-api", "http_port"),
                                               ("chatmq-notifier", "notifier_metrics_port")])  # fmt: skip
def test_chatmq_healthchecks_require_readyz(
    kind: str, setting: str, services: dict[str, Any], probe_server: tuple[int, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, handler = probe_server
    for name in _of_kind(services, kind):
        own_port = str(getattr(_settings(services[name], monkeypatch), setting))
        argv = _healthcheck_argv(services[name])
        assert f"127.0.0.1:{own_port}/readyz" in argv[2], name
        handler.status, handler.path_answered = 200, "/readyz"
        assert _run_python_healthcheck(argv, own_port, str(port)) == 0
        handler.status = 503
        assert _run_python_healthcheck(argv, own_port, str(port)) != 0


def test_guard_healthcheck_sees_its_own_reports(services: dict[str, Any], redis_url: str, redis_client: Any) -> None:
    (guard,) = _of_kind(services, "chatmq-rabbitmq-guard")
    argv = _healthcheck_argv(services[guard])
    assert _run_python_healthcheck(argv, CHATMQ_REDIS_URL=redis_url) == 1, "nothing reported yet"
    applied = AppliedVersions(redis_client)
    applied.report("rabbitmq-guard-another-host-7", 3)
    assert _run_python_healthcheck(argv, CHATMQ_REDIS_URL=redis_url) == 1, "another guard's report is not ours"
    applied.report(guard_name(), 3)  # the name the running guard reports under, on this host
    assert _run_python_healthcheck(argv, CHATMQ_REDIS_URL=redis_url) == 0
    applied.forget(guard_name())
    assert _run_python_healthcheck(argv, CHATMQ_REDIS_URL=redis_url) == 1
