"""The API fixtures (real SQLite store, private Redis, app factory) shared with tests/api."""

from tests.api.conftest import app, client, make_app, password_hashes, settings, store  # noqa: F401
