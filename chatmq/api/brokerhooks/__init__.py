"""The HTTP hooks standard brokers call to ask chatmq who may connect and act where.

One module per broker's dialect (``emqx``: EMQX 5's JSON hooks; ``rabbitmq``: RabbitMQ's
``rabbitmq_auth_backend_http``), each a blueprint that only parses its broker's requests and words
its answers; every decision comes from ``core``: the one login path (``chatmq.core.logins.log_in``)
and the one rule table (``chatmq.core.access.authorize``). A dialect's hooks exist only when its
shared secret is configured (404 otherwise); docs/brokers.md has each broker's configuration.
"""

from __future__ import annotations

from flask import Flask

from chatmq.api.brokerhooks import emqx, rabbitmq


def install(app: Flask) -> None:
    app.register_blueprint(emqx.bp)
    app.register_blueprint(rabbitmq.bp)
