"""deploy/docker-compose.cluster.yml and its scripts, checked without Docker (it cannot run here).

The Compose Specification schema first (the same check as docker-compose.yml), then what makes the
cluster hang together: every dependency resolves and can be satisfied (no cycle, health-checked or
one-shot), every URL a chatmq service is given names services that exist and listen there, the
proxy's servers are those services, no published port clashes, no two services share a data
volume, the replica-set and cluster scripts name the same nodes as the file, and EMQX's auth
hooks point at the API's real routes with the fields the API reads.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

from chatmq.api.brokerhooks.emqx import SECRET_HEADER
from chatmq.api.brokerhooks.emqx import bp as emqx_blueprint
from chatmq.api.health import bp as health_blueprint
from chatmq.cli.main import cli
from chatmq.core.config import Settings
from chatmq.core.partitions import check_worker_id
from tests.test_compose import (
    ENV_PREFIX,
    _environment,
    _healthcheck_argv,
    _run_python_healthcheck,
    _schema_check,
    probe_server,  # noqa: F401  (a fixture used below)
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CLUSTER_FILE = DEPLOY / "docker-compose.cluster.yml"
HAPROXY_CFG = DEPLOY / "haproxy" / "haproxy.cfg"
SCRIPTS = [DEPLOY / "mongo" / "init-replica-sets.sh", DEPLOY / "mongo" / "init-sharding.sh",
           DEPLOY / "redis" / "create-cluster.sh"]

# Variables the operator provides; anything else written ${LIKE_THIS} would silently be empty.
HOST_VARIABLES = {"CHATMQ_SECRET_KEY", "CHATMQ_EMQX_HOOK_SECRET", "EMQX_NODE_COOKIE", "CHATMQ_LOG_LEVEL"}
REQUIRED_VARIABLES = {"CHATMQ_SECRET_KEY", "CHATMQ_EMQX_HOOK_SECRET", "EMQX_NODE_COOKIE"}
HOST_ENV = {"CHATMQ_SECRET_KEY": "s3cret-key", "CHATMQ_EMQX_HOOK_SECRET": "hook-s3cret", "EMQX_NODE_COOKIE": "c00kie"}
EMQX_LISTENERS = {"mqtt": 1883, "ws": 8083}  # EMQX 5's default tcp and ws listeners

# ${NAME...} not preceded by another $ (Compose's escape); $${name} is left for EMQX.
_HOST_VAR = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, and $$ for a literal $."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = env.get(name)
        if op.endswith("?") and not value:
            raise LookupError(arg or f"{name} is required")
        if op.endswith("-") and not value:
            return arg
        return value or ""

    return _HOST_VAR.sub(sub, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(CLUSTER_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    assert isinstance(command, list), "commands use the exec form"
    return [str(part) for part in command]


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _kind(service: dict[str, Any]) -> str:
    image = str(service.get("image", ""))
    command = _command(service)
    if "build" in service:
        return "chatmq-" + command[0]
    if image.startswith("emqx/emqx"):
        return "emqx"
    if image.startswith("haproxy"):
        return "haproxy"
    if image.startswith("mongo"):
        if not command or command[0] == "bash":
            return "job"
        if command[0] == "mongos":
            return "mongos"
        return "configsvr" if "--configsvr" in command else "shardsvr"
    if image.startswith("redis"):
        return "job" if command[:1] == ["bash"] else "redis"
    raise AssertionError(f"unknown kind of service: {image}")


def _of_kind(services: dict[str, Any], kind: str) -> list[str]:
    return sorted(name for name, service in services.items() if _kind(service) == kind)


def _published(service: dict[str, Any]) -> list[tuple[int, int]]:
    out = []
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        out.append((int(host.rsplit(":", 1)[-1]), int(container.split("/")[0])))
    return out


def _chatmq_settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(Settings.model_fields):
        monkeypatch.delenv(ENV_PREFIX + key.upper(), raising=False)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, interpolate(value, HOST_ENV))
    return Settings()


# ---------------------------------------------------------------------------------------------
# The Compose Specification


def test_cluster_file_matches_the_compose_spec() -> None:
    result = _schema_check(CLUSTER_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_cluster_file(compose: dict[str, Any], tmp_path: Path) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["mongos-1"]["depends_on"]["mongo-rs-init"]["condition"] = "service_finished"
    path = tmp_path / "docker-compose.cluster.yml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    assert _schema_check(path).returncode == 1


# ---------------------------------------------------------------------------------------------
# The shape the issue asks for


def test_every_tier_is_there(services: dict[str, Any]) -> None:
    assert len(_of_kind(services, "emqx")) == 2
    assert len(_of_kind(services, "chatmq-bridge")) >= 2
    assert len(_of_kind(services, "chatmq-api")) >= 2
    assert len(_of_kind(services, "configsvr")) == 3
    assert len(_of_kind(services, "mongos")) >= 2
    assert len(_of_kind(services, "redis")) == 6
    shard_sets = {_option(_command(services[n]), "--replSet") for n in _of_kind(services, "shardsvr")}
    assert len(shard_sets) == 2
    assert not _of_kind(services, "chatmq-broker"), "EMQX is the broker here"


def test_bridge_workers_parse_as_cli_commands_with_distinct_ids(services: dict[str, Any]) -> None:
    ids = []
    for name in _of_kind(services, "chatmq-bridge"):
        command = _command(services[name])
        cli.commands["bridge"].make_context("bridge", command[1:])  # raises on an unknown option
        ids.append(check_worker_id(_option(command, "--worker-id")))
    assert len(set(ids)) == len(ids)


def test_emqx_nodes_form_one_cluster(services: dict[str, Any]) -> None:
    names = set()
    for name in _of_kind(services, "emqx"):
        service = services[name]
        env = _environment(service)
        node = env["EMQX_NODE__NAME"]
        host = node.split("@", 1)[1]
        assert "." in host, "EMQX runs in long-name mode: the host must be an FQDN or IP"
        assert service["hostname"] == host
        assert host in service["networks"]["default"]["aliases"], f"{name}: other nodes cannot resolve {host}"
        assert env["EMQX_CLUSTER__DISCOVERY_STRATEGY"] == "static"
        names.add(node)
    for name in _of_kind(services, "emqx"):
        seeds = json.loads(_environment(services[name])["EMQX_CLUSTER__STATIC__SEEDS"])
        assert set(seeds) == names
        assert not any(key.startswith("EMQX_LISTENERS__") for key in _environment(services[name])), \
            "the proxy assumes EMQX's default listener ports"


def _replica_sets(services: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = {}
    for name in _of_kind(services, kind):
        command = _command(services[name])
        entry = sets.setdefault(_option(command, "--replSet"), {"port": _option(command, "--port"), "hosts": []})
        assert entry["port"] == _option(command, "--port")
        entry["hosts"].append(name)
    return sets


def test_replica_set_script_initiates_exactly_the_compose_members(services: dict[str, Any]) -> None:
    text = (DEPLOY / "mongo" / "init-replica-sets.sh").read_text()
    initiated = {
        m["name"]: (m["port"], m["config"] == "true", m["hosts"].split())
        for m in re.finditer(r"^initiate (?P<name>\S+) (?P<port>\d+) (?P<config>true|false) (?P<hosts>.+)$", text, re.M)
    }
    expected = {
        name: (entry["port"], kind == "configsvr", entry["hosts"])
        for kind in ("configsvr", "shardsvr")
        for name, entry in _replica_sets(services, kind).items()
    }
    assert initiated == expected
    for name, (_, _, hosts) in expected.items():
        assert len(hosts) == 3, f"{name}: three members, so a majority write survives one down"


def test_mongos_and_the_sharding_script_name_the_real_replica_sets(services: dict[str, Any]) -> None:
    (config_set, config), = _replica_sets(services, "configsvr").items()
    configdb = f"{config_set}/" + ",".join(f"{host}:{config['port']}" for host in config["hosts"])
    for name in _of_kind(services, "mongos"):
        assert _option(_command(services[name]), "--configdb") == configdb
    text = (DEPLOY / "mongo" / "init-sharding.sh").read_text()
    added = dict(re.findall(r"(\w+): '(\w+/[^']+)'", text))
    expected = {
        name: f"{name}/" + ",".join(f"{host}:{entry['port']}" for host in entry["hosts"])
        for name, entry in _replica_sets(services, "shardsvr").items()
    }
    assert added == expected
    mongos_url = re.search(r'MONGOS="mongodb://([^:/]+):(\d+)/', text)
    assert mongos_url and mongos_url[1] in _of_kind(services, "mongos")
    assert "/deploy/shard-chatmq.js" in text and (DEPLOY / "mongo" / "shard-chatmq.js").is_file()


def test_redis_script_joins_exactly_the_cluster_nodes(services: dict[str, Any]) -> None:
    nodes = _of_kind(services, "redis")
    text = (DEPLOY / "redis" / "create-cluster.sh").read_text()
    listed = re.search(r"^NODES=\((.*)\)$", text, re.M)
    assert listed and listed[1].split() == nodes
    for name in nodes:
        command = _command(services[name])
        assert _option(command, "--cluster-enabled") == "yes"
        assert _option(command, "--cluster-announce-hostname") == name
        assert _option(command, "--cluster-preferred-endpoint-type") == "hostname"
        assert "--port" not in command  # 6379, as the script and the URLs assume


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash_and_mounted_where_the_jobs_run_them(
    script: Path, services: dict[str, Any]
) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    jobs = [s for s in services.values() if _command(s)[:1] == ["bash"] and _command(s)[1].endswith(script.name)]
    assert len(jobs) == 1, script.name
    mounts = dict(volume.split(":")[:2][::-1] for volume in jobs[0]["volumes"])
    container_dir = str(Path(_command(jobs[0])[1]).parent)
    assert (CLUSTER_FILE.parent / mounts[container_dir]).resolve() == script.parent


# ---------------------------------------------------------------------------------------------
# Dependencies, health and restarts


def test_dependencies_resolve_and_can_be_satisfied(services: dict[str, Any]) -> None:
    for name, service in services.items():
        one_shot = _kind(service) == "job"
        if one_shot:
            assert service.get("restart") == "no", f"{name} must run once"
        else:
            assert "healthcheck" in service, f"{name} has no healthcheck"
            assert service.get("restart") in ("unless-stopped", "always"), name
        for target, spec in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, it has none"
            elif condition == "service_completed_successfully":
                assert _kind(services[target]) == "job", f"{name} waits for {target} to finish; it never does"
            else:
                assert condition == "service_started", (name, target, condition)


def test_no_dependency_cycle(services: dict[str, Any]) -> None:
    assert_no_dependency_cycle(services)


def assert_no_dependency_cycle(services: dict[str, Any]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, "dependency cycle: " + " -> ".join((*path, name))
        if name not in done:
            for target in services[name].get("depends_on", {}):
                visit(target, (*path, name))
            done.add(name)

    for name in services:
        visit(name, ())


def test_chatmq_waits_for_a_sharded_store_a_formed_redis_cluster_and_the_broker(services: dict[str, Any]) -> None:
    for name in _of_kind(services, "chatmq-api") + _of_kind(services, "chatmq-bridge"):
        deps = services[name]["depends_on"]
        for job in ("mongo-shard-init", "redis-cluster-create"):
            assert deps[job] == {"condition": "service_completed_successfully"}, (name, job)
        for node in _of_kind(services, "emqx"):
            assert deps[node] == {"condition": "service_healthy"}, (name, node)
    for name in _of_kind(services, "chatmq-bridge"):  # their login goes through the API's hooks
        assert set(_of_kind(services, "chatmq-api")) <= set(services[name]["depends_on"])


# ---------------------------------------------------------------------------------------------
# What the chatmq services are told


def test_environment_names_are_settings_fields(services: dict[str, Any]) -> None:
    assert_only_settings_fields(services)


def assert_only_settings_fields(services: dict[str, Any]) -> None:
    """chatmq services are told only Settings fields; third-party services nothing of chatmq's."""
    fields = set(Settings.model_fields)
    for name, service in services.items():
        env = _environment(service)
        if "build" not in service:
            assert not any(key.startswith(ENV_PREFIX) for key in env), name
            continue
        for key in env:
            assert key.startswith(ENV_PREFIX) and key.removeprefix(ENV_PREFIX).lower() in fields, f"{name}: {key}"


def test_only_known_host_variables_and_the_secrets_are_required() -> None:
    text = CLUSTER_FILE.read_text()
    used = {m["name"] for m in _HOST_VAR.finditer(text)}
    assert used == HOST_VARIABLES
    for variable in REQUIRED_VARIABLES:
        with pytest.raises(LookupError, match=f"set {variable}"):
            interpolate(text, {k: v for k, v in HOST_ENV.items() if k != variable})


def test_urls_point_at_services_that_listen_there(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mongos = {name: int(_option(_command(services[name]), "--port")) for name in _of_kind(services, "mongos")}
    redis_nodes = set(_of_kind(services, "redis"))
    lb_binds = _haproxy()["binds"]
    for name in _of_kind(services, "chatmq-api") + _of_kind(services, "chatmq-bridge"):
        settings = _chatmq_settings(services[name], monkeypatch)
        url = settings.resolved_store_url
        match = re.fullmatch(r"mongodb://(?P<hosts>[^/]+)/(?P<db>\w+)\?(?P<query>.*)", url)
        assert match, url
        hosts = [host.split(":") for host in match["hosts"].split(",")]
        assert {h: int(p) for h, p in hosts} == mongos, f"{name}: the store URL must list every mongos"
        assert "readPreference=primaryPreferred" in match["query"]
        assert settings.redis_url.startswith("redis+cluster://")
        host, port = settings.redis_url.removeprefix("redis+cluster://").split(":")
        assert host in redis_nodes and port == "6379"
        assert settings.broker_host == "lb" and lb_binds[settings.resolved_broker_port] == "emqx_mqtt"
        assert settings.load_secret() == HOST_ENV["CHATMQ_SECRET_KEY"]
        assert settings.emqx_hook_secret == HOST_ENV["CHATMQ_EMQX_HOOK_SECRET"]
        assert settings.host == "0.0.0.0"


# ---------------------------------------------------------------------------------------------
# The proxy


def _haproxy(path: Path = HAPROXY_CFG) -> dict[str, Any]:
    """frontends (bind port -> backend), backends (name -> [(host, port)]) and check paths."""
    binds: dict[int, str] = {}
    backends: dict[str, list[tuple[str, int]]] = {}
    checks: dict[str, str] = {}
    section, name, bind = "", "", None
    monitor = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if not raw[0].isspace():
            section, name, bind = words[0], (words[1] if len(words) > 1 else ""), None
            if section == "backend":
                backends[name] = []
        elif section == "frontend" and words[0] == "bind":
            bind = int(words[1].rsplit(":", 1)[1])
            binds[bind] = ""
        elif section == "frontend" and words[0] == "default_backend":
            binds[bind] = words[1]  # type: ignore[index]
        elif section == "frontend" and words[0] == "monitor-uri":
            monitor[bind] = words[1]
        elif section == "backend" and words[0] == "server":
            host, port = words[2].rsplit(":", 1)
            backends[name].append((host, int(port)))
        elif section == "backend" and words[:2] == ["option", "httpchk"]:
            checks[name] = words[3]
    return {"binds": binds, "backends": backends, "checks": checks, "monitor": monitor}


def test_proxy_servers_are_the_services_and_their_ports(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _haproxy()
    assert set(proxy["backends"]) == {b for b in proxy["binds"].values() if b}
    api_port = {
        name: _chatmq_settings(services[name], monkeypatch).http_port for name in _of_kind(services, "chatmq-api")
    }
    expected = {
        "emqx_mqtt": {(name, EMQX_LISTENERS["mqtt"]) for name in _of_kind(services, "emqx")},
        "emqx_ws": {(name, EMQX_LISTENERS["ws"]) for name in _of_kind(services, "emqx")},
        "api": set(api_port.items()),
    }
    assert {name: set(servers) for name, servers in proxy["backends"].items()} == expected
    health_routes = _routes(health_blueprint)
    assert proxy["checks"]["api"] == "/healthz" and "/healthz" in health_routes


def test_published_ports_are_the_proxy_frontends_and_do_not_clash(services: dict[str, Any]) -> None:
    proxy = _haproxy()
    seen: dict[int, str] = {}
    for name, service in services.items():
        for host_port, _ in _published(service):
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both publish {host_port}"
            seen[host_port] = name
    assert set(seen.values()) == {"lb"}, "only the proxy is reachable from outside"
    lb_ports = _published(services["lb"])
    assert all(host == container for host, container in lb_ports)
    routed = {port for port, backend in proxy["binds"].items() if backend}
    assert {container for _, container in lb_ports} == routed
    (health_port, path), = proxy["monitor"].items()
    assert health_port not in routed
    assert f"http://127.0.0.1:{health_port}{path}" in _healthcheck_argv(services["lb"])


def test_each_data_volume_belongs_to_one_service(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    owners: dict[str, str] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert volume.endswith(":ro"), f"{name}: config mounts are read-only"
                continue
            assert source in declared, f"{name}: {source} is not a named volume"
            assert source not in owners, f"{owners[source]} and {name} would share {source}"
            owners[source] = name
    stateful = _of_kind(services, "emqx") + _of_kind(services, "configsvr") + _of_kind(services, "shardsvr") \
        + _of_kind(services, "redis")
    assert set(stateful) <= set(owners.values())
    assert set(owners) == declared


# ---------------------------------------------------------------------------------------------
# EMQX's hooks


def _routes(blueprint: Any) -> set[str]:
    app = Flask("routes")
    app.register_blueprint(blueprint)
    return {rule.rule for rule in app.url_map.iter_rules()}


def emqx_hook_config(services: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """EMQX_AUTHENTICATION / EMQX_AUTHORIZATION__SOURCES as EMQX receives them."""
    raw = _environment(services[_of_kind(services, "emqx")[0]])[key]
    return json.loads(interpolate(raw, HOST_ENV))


@pytest.mark.parametrize(("key", "route", "fields"), [
    ("EMQX_AUTHENTICATION", "/v1/emqx/authn", {"username", "password"}),
    ("EMQX_AUTHORIZATION__SOURCES", "/v1/emqx/authz", {"username", "topic", "action"}),
])
def test_emqx_hooks_point_at_the_api_routes_with_the_secret(
    key: str, route: str, fields: set[str], services: dict[str, Any]
) -> None:
    (hook,) = emqx_hook_config(services, key)
    match = re.fullmatch(r"http://(?P<host>[^:/]+):(?P<port>\d+)(?P<path>/.*)", hook["url"])
    assert match and match["host"] == "lb" and _haproxy()["binds"][int(match["port"])] == "api"
    assert match["path"] == route and route in _routes(emqx_blueprint)
    assert hook["method"] == "post" and hook["headers"]["content-type"] == "application/json"
    assert hook["headers"][SECRET_HEADER] == HOST_ENV["CHATMQ_EMQX_HOOK_SECRET"]
    for field in fields:
        assert hook["body"][field] == "${" + field + "}", "EMQX's placeholder, escaped from Compose"
    environments = [_environment(services[n]) for n in _of_kind(services, "emqx")]
    assert all(env[key] == environments[0][key] for env in environments), "both nodes ask the same way"


def test_emqx_denies_what_no_rule_allows(services: dict[str, Any]) -> None:
    for name in _of_kind(services, "emqx"):
        env = _environment(services[name])
        assert env["EMQX_AUTHORIZATION__NO_MATCH"] == "deny"
        assert env["EMQX_AUTHORIZATION__DENY_ACTION"] == "disconnect"
    (source,) = emqx_hook_config(services, "EMQX_AUTHORIZATION__SOURCES")
    assert source["type"] == "http", "only chatmq's rules: EMQX's default file source would allow all"


# ---------------------------------------------------------------------------------------------
# Healthchecks run for real


@pytest.fixture
def chatmq_probe(probe_server: tuple[int, Any]) -> Iterator[tuple[int, Any]]:  # noqa: F811
    yield probe_server


@pytest.mark.parametrize(("kind", "setting"), [("chatmq-bridge", "bridge_metrics_port"), ("chatmq-api", "http_port")])
def test_chatmq_healthchecks_require_readyz(
    kind: str, setting: str, services: dict[str, Any], chatmq_probe: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, handler = chatmq_probe
    for name in _of_kind(services, kind):
        own_port = str(getattr(_chatmq_settings(services[name], monkeypatch), setting))
        argv = _healthcheck_argv(services[name])
        assert f"127.0.0.1:{own_port}/readyz" in argv[2], name
        handler.status, handler.path_answered = 200, "/readyz"
        assert _run_python_healthcheck(argv, own_port, str(port)) == 0
        handler.status = 503
        assert _run_python_healthcheck(argv, own_port, str(port)) != 0
