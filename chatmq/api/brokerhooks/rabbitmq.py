"""RabbitMQ's HTTP auth backend (``rabbitmq_auth_backend_http``): RabbitMQ asks, chatmq's rules answer.

RabbitMQ 3.10 asks four URLs (``auth_http.user_path`` etc., with ``auth_http.http_method = post``
form-encoded bodies, or query strings with the default GET; both are read) and takes a plain-text
``allow`` or ``deny``; what it sends was checked against a running 3.10.8:

- ``/user`` ``username, password, vhost, client_id``: the one login path (password, API token,
  identity-provider token; revocation, disabled users, the failed-login throttle). The answer is a
  bare ``allow``: no tag, so no chatmq user ever reaches RabbitMQ's management. Only MQTT logins
  are let in (they carry a ``client_id``; AMQP and management logins do not), and the client id is
  claimed for the user (chatmq.core.clientids): another user's login with it is refused, as chatmq's
  own broker refuses it, so nobody resumes someone else's session queue.
- ``/vhost`` ``username, vhost, ip``: the MQTT plugin's vhost only.
- ``/resource`` ``username, vhost, resource, name, permission, client_id``: the MQTT exchange
  (read: subscribe, write: publish) and the client's own session queues
  (``mqtt-subscription-{client_id}qos0|qos1``, any permission); nothing else.
- ``/topic`` ``username, vhost, resource, name, permission, routing_key``: ``write`` is a PUBLISH
  (a last will too: RabbitMQ checks it as a publish when it sends it), ``read`` a SUBSCRIBE to the
  filter; the routing key is turned back into the MQTT topic (chatmq.adapters.rabbitmq.topics)
  and decided by ``chatmq.core.access.authorize``.

Only RabbitMQ may call them: the URLs carry ``CHATMQ_RABBITMQ_HOOK_SECRET`` as the password of
HTTP Basic auth (``http://rabbitmq:SECRET@api:8080/v1/rabbitmq/user``; RabbitMQ's HTTP client
sends a URL's user info as Basic auth); without a configured secret the hooks do not exist (404).
Malformed requests are denied.
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, request

from chatmq.adapters.rabbitmq.topics import session_client_id, topic_of
from chatmq.api.brokerhooks import core
from chatmq.api.context import get_context
from chatmq.core.access import Action
from chatmq.core.clientids import ClientIds

log = logging.getLogger("chatmq.api")

_TOPIC_ACTIONS = {"write": Action.PUBLISH, "read": Action.SUBSCRIBE}
_EXCHANGE_PERMISSIONS = frozenset({"read", "write"})

bp = Blueprint("rabbitmq", __name__, url_prefix="/v1/rabbitmq")


@bp.before_request
def _only_rabbitmq() -> None:
    given = request.authorization
    core.require_secret(get_context().settings.rabbitmq_hook_secret, given.password if given else None)


def _values(*names: str) -> dict[str, str] | None:
    """The named parameters (form body or query string), each a non-empty string, else None."""
    values = {name: request.values.get(name, "") for name in names}
    return values if all(values.values()) else None


def _answer(allow: bool) -> Response:
    return Response("allow" if allow else "deny", mimetype="text/plain")


def _our_vhost(vhost: str) -> bool:
    return vhost == get_context().settings.rabbitmq_vhost


@bp.route("/user", methods=["GET", "POST"])
def user() -> Response:
    """A login. Allowed: an MQTT client's right credentials, with a client id no other user has."""
    values = _values("username", "password", "client_id")
    if values is None:
        return _answer(False)
    identity = core.log_in_device(values["username"], values["password"], None, broker="rabbitmq")
    if identity is None:
        return _answer(False)
    if "." in identity.user:  # RabbitMQ turns '/' into '.': such a user's topics are ambiguous
        log.warning("rabbitmq login: user %r has a '.' in its id; refused on RabbitMQ", identity.user)
        return _answer(False)
    try:
        ctx = get_context()
        mine = ClientIds(ctx.redis, ctx.settings.rabbitmq_client_id_ttl_s).claim(values["client_id"], identity.user)
    except redis.RedisError:
        log.warning("rabbitmq login: cannot check the client id's owner; denied")
        return _answer(False)
    if not mine:
        log.warning("rabbitmq login: client id %r belongs to another user; %r refused",
                    values["client_id"], identity.user)  # fmt: skip
    return _answer(mine)


@bp.route("/vhost", methods=["GET", "POST"])
def vhost() -> Response:
    values = _values("username", "vhost")
    return _answer(values is not None and _our_vhost(values["vhost"]))


@bp.route("/resource", methods=["GET", "POST"])
def resource() -> Response:
    """The MQTT exchange (read and write), and the client's own session queues."""
    values = _values("username", "vhost", "resource", "name", "permission")
    if values is None or not _our_vhost(values["vhost"]):
        return _answer(False)
    if values["resource"] == "exchange":
        return _answer(values["name"] == get_context().settings.rabbitmq_exchange
                       and values["permission"] in _EXCHANGE_PERMISSIONS)  # fmt: skip
    if values["resource"] == "queue":
        # The login claimed the client id for this user, so its own id is all it may name.
        client_id = request.values.get("client_id", "")
        return _answer(bool(client_id) and session_client_id(values["name"]) == client_id)
    return _answer(False)


@bp.route("/topic", methods=["GET", "POST"])
def topic() -> Response:
    """A publish (``write``) or a subscription (``read``) on the MQTT exchange, by the rule table."""
    values = _values("username", "vhost", "resource", "name", "permission", "routing_key")
    if (values is None or not _our_vhost(values["vhost"]) or values["resource"] != "topic"
            or values["name"] != get_context().settings.rabbitmq_exchange
            or values["permission"] not in _TOPIC_ACTIONS):  # fmt: skip
        return _answer(False)
    return _answer(core.allowed(values["username"], _TOPIC_ACTIONS[values["permission"]],
                                topic_of(values["routing_key"])))  # fmt: skip
