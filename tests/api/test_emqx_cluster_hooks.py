"""The EMQX hooks exactly as deploy/docker-compose.cluster.yml configures EMQX to call them: the
URL path, headers and body template from the file, EMQX's placeholders filled in as EMQX would."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from flask import Flask

from chatmq.api.brokerhooks.emqx import SECRET_HEADER
from tests.api.helpers import PASSWORDS
from tests.test_compose_cluster import CLUSTER_FILE, HOST_ENV, emqx_hook_config

pytestmark = pytest.mark.timeout(60)


def _call(app: Flask, hook: dict[str, Any], **placeholders: str) -> dict[str, Any]:
    body = {key: re.sub(r"\$\{(\w+)\}", lambda m: placeholders[m[1]], value) for key, value in hook["body"].items()}
    headers = {k: v for k, v in hook["headers"].items() if k.lower() != "content-type"}
    response = app.test_client().post(urlsplit(hook["url"]).path, json=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_emqx_as_configured_logs_in_and_authorizes(make_app: Callable[..., Flask]) -> None:
    services = yaml.safe_load(CLUSTER_FILE.read_text())["services"]
    (authn,) = emqx_hook_config(services, "EMQX_AUTHENTICATION")
    (authz,) = emqx_hook_config(services, "EMQX_AUTHORIZATION__SOURCES")
    app = make_app(emqx_hook_secret=HOST_ENV["CHATMQ_EMQX_HOOK_SECRET"], membership_refresh_s=0.0)
    device = {"clientid": "alice-phone", "peerhost": "10.0.0.7"}

    assert _call(app, authn, username="alice", password=PASSWORDS["alice"], **device)["result"] == "allow"
    assert _call(app, authn, username="alice", password="wrong", **device)["result"] == "deny"
    assert _call(app, authz, username="alice", topic="chat/c1/send/alice", action="publish", **device) == {
        "result": "allow"}
    assert _call(app, authz, username="alice", topic="chat/c1/send/bob", action="publish", **device) == {
        "result": "deny"}

    response = app.test_client().post(urlsplit(authn["url"]).path, json={}, headers={SECRET_HEADER: "not-it"})
    assert response.status_code == 401  # the secret in the file is what makes the calls above count
