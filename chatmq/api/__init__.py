"""The chatmq HTTP API: history, conversations, presence and tokens (Flask + flask-openapi3)."""

from chatmq.api.app import create_app

__all__ = ["create_app"]
