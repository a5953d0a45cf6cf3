"""``/v1/media`` through the Flask test client, over both media backends."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from chatmq.api import create_app
from chatmq.api.media import MULTIPART_SLACK
from chatmq.core.config import Settings
from chatmq.core.media import MediaStore, mongomock_media_store, open_media_store
from chatmq.core.store import Store
from tests.api.helpers import assert_error, bearer
from tests.media import samples

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["fs", "gridfs-mongomock"])
def media(request: pytest.FixtureRequest, settings: Settings) -> MediaStore:
    if request.param == "fs":
        return open_media_store(settings)  # the embedded default: files under the data dir
    return mongomock_media_store(f"api-media-{uuid.uuid4().hex}")


@pytest.fixture
def make_media_app(
    settings: Settings, store: Store, redis_client: redis.Redis, media: MediaStore
) -> Callable[..., Flask]:
    def make(**overrides: Any) -> Flask:
        return create_app(settings.model_copy(update=overrides), store=store, redis_client=redis_client,
                          media_store=media)

    return make


@pytest.fixture
def client(make_media_app: Callable[..., Flask]) -> FlaskClient:
    return make_media_app().test_client()


def upload(client: FlaskClient, user: str | None, data: bytes, name: str | None = "f.bin",
           content_type: str | None = None, field: str = "file") -> Any:
    part = (io.BytesIO(data), name, content_type) if content_type else (io.BytesIO(data), name)
    headers = bearer(user) if user else {}
    return client.post("/v1/media", data={field: part}, headers=headers, content_type="multipart/form-data")


def test_upload_then_download(client: FlaskClient, media: MediaStore) -> None:
    response = upload(client, "alice", samples.PNG, "cat.png", "image/png")
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"media_id", "url", "mime", "size", "sha256"}
    assert body["url"] == f"/v1/media/{body['media_id']}"
    assert (body["mime"], body["size"]) == ("image/png", len(samples.PNG))
    assert body["sha256"] == hashlib.sha256(samples.PNG).hexdigest()
    info = media.get(body["media_id"])
    assert info is not None and info.owner == "alice" and info.name == "cat.png"

    got = client.get(body["url"], headers=bearer("alice"))
    assert got.status_code == 200 and got.data == samples.PNG
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["Content-Length"] == str(len(samples.PNG))
    assert got.headers["ETag"] == f'"{body["sha256"]}"'
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"] == "inline; filename=cat.png"
    again = client.get(body["url"], headers={**bearer("alice"), "If-None-Match": got.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    ranged = client.get(body["url"], headers={**bearer("alice"), "Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.data == samples.PNG[:8]


@pytest.mark.parametrize(
    ("data", "name", "declared", "mime", "disposition"),
    [
        (samples.PDF, "report.pdf", "application/pdf", "application/pdf", "attachment; filename=report.pdf"),
        (samples.TEXT, "notes.txt", "text/plain", "text/plain", "attachment; filename=notes.txt"),
        (samples.OGG_OPUS, "voice.opus", "audio/opus", "audio/ogg", "inline; filename=voice.opus"),
        (samples.MP4, "clip.mp4", None, "video/mp4", "inline; filename=clip.mp4"),
        (samples.JPEG, "photo.jpg", "application/octet-stream", "image/jpeg", "inline; filename=photo.jpg"),
        (samples.GIF, "blob", None, "image/gif", "inline; filename=blob"),
        (samples.HTML, "page.txt", "text/plain", "text/plain", "attachment; filename=page.txt"),
    ],
)
def test_type_is_what_the_content_is(
    client: FlaskClient, data: bytes, name: str, declared: str | None, mime: str, disposition: str
) -> None:
    response = upload(client, "bob", data, name, declared)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["mime"] == mime
    got = client.get(response.get_json()["url"], headers=bearer("bob"))
    assert got.status_code == 200 and got.data == data
    assert got.headers["Content-Type"].split(";")[0] == mime
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"] == disposition


def test_a_name_longer_than_a_message_can_carry_is_refused(client: FlaskClient, media: MediaStore) -> None:
    refused = assert_error(upload(client, "alice", samples.PNG, "p" * 252 + ".png", "image/png"), 400, "bad_request")
    assert refused["message"] == "file name: at most 255 characters, got 256"
    assert upload(client, "alice", samples.PNG, "p" * 251 + ".png", "image/png").status_code == 201
    assert upload(client, "alice", samples.PNG, "/tmp/" + "p" * 251 + ".png", "image/png").status_code == 201


def test_unicode_and_path_like_names_are_only_names(client: FlaskClient, media: MediaStore) -> None:
    response = upload(client, "alice", samples.PNG, "../../etc/chat ü.png", "image/png")
    assert response.status_code == 201
    info = media.get(response.get_json()["media_id"])
    assert info is not None and info.name == "chat ü.png"
    got = client.get(response.get_json()["url"], headers=bearer("alice"))
    assert "filename*=UTF-8''chat%20%C3%BC.png" in got.headers["Content-Disposition"]


@pytest.mark.parametrize(
    ("data", "name", "declared", "what"),
    [
        (samples.PNG, "cat.png", "image/jpeg", "declared Content-Type"),  # declared type lies
        (samples.PNG, "cat.jpg", "image/png", "file name"),  # the name lies
        (samples.PDF, "invoice.png", "application/octet-stream", "file name says image/png"),
        (samples.PDF, "invoice.png", None, "says image/png but the content is application/pdf"),  # guessed type
        (samples.HTML, "page.html", "text/html", "declared Content-Type"),  # text may never become HTML
        (samples.TEXT, "run.exe", "application/octet-stream", "file name"),
        (samples.ELF, "tool", None, "not accepted"),  # a real type, not an allowed one
        (samples.BINARY_JUNK, "data.png", "image/png", "not accepted"),  # claims PNG, is nothing
    ],
)
def test_content_that_lies_or_is_not_allowed_is_415(
    client: FlaskClient, media: MediaStore, data: bytes, name: str, declared: str | None, what: str
) -> None:
    error = assert_error(upload(client, "alice", data, name, declared), 415, "unsupported_media_type")
    assert what in error["message"]


def test_allowed_types_are_a_setting(make_media_app: Callable[..., Flask]) -> None:
    client = make_media_app(media_types="application/pdf").test_client()
    assert_error(upload(client, "alice", samples.PNG, "cat.png"), 415, "unsupported_media_type")
    assert upload(client, "alice", samples.PDF, "a.pdf").status_code == 201


def test_oversize_is_413(make_media_app: Callable[..., Flask]) -> None:
    client = make_media_app(media_max_bytes=1000).test_client()
    just = samples.TEXT * (1000 // len(samples.TEXT))
    just += b"x" * (1000 - len(just))
    assert upload(client, "alice", just, "ok.txt").status_code == 201
    assert_error(upload(client, "alice", just + b"x", "big.txt"), 413, "too_large")
    # Far past the limit: refused while reading the body, before it is parsed.
    huge = assert_error(upload(client, "alice", b"x" * 200_000, "huge.txt"), 413, "too_large")
    assert huge["message"] == f"request body over {1000 + MULTIPART_SLACK} bytes"


def test_default_limit_is_10_mib_and_exceeds_the_json_cap(client: FlaskClient) -> None:
    assert Settings().media_max_bytes == 10 * 1024 * 1024
    big = samples.PNG + b"\x00" * (1024 * 1024)  # far above the API's 256 KiB cap for JSON requests
    response = upload(client, "alice", big, "big.png")
    assert response.status_code == 201 and response.get_json()["size"] == len(big)


def test_bad_requests(client: FlaskClient) -> None:
    assert_error(upload(client, "alice", b"", "empty.txt"), 400, "bad_request")
    assert_error(upload(client, "alice", samples.PNG, "a.png", field="other"), 400, "bad_request")
    assert_error(client.post("/v1/media", json={"file": "x"}, headers=bearer("alice")), 400, "bad_request")
    as_field = client.post("/v1/media", data={"file": "not a file part"}, headers=bearer("alice"),
                           content_type="multipart/form-data")
    assert_error(as_field, 400, "bad_request")


def test_authentication(client: FlaskClient) -> None:
    assert_error(upload(client, None, samples.PNG), 401, "unauthorized")
    response = client.post("/v1/media", data={"file": (io.BytesIO(samples.PNG), "a.png")},
                           headers={"Authorization": "Bearer not-a-token"}, content_type="multipart/form-data")
    assert_error(response, 401, "unauthorized")
    url = upload(client, "alice", samples.PNG).get_json()["url"]
    assert_error(client.get(url), 401, "unauthorized")
    assert_error(client.get(url, headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
    assert_error(client.get(url, headers=bearer("dave")), 401, "unauthorized")  # disabled user


def test_access_rules(client: FlaskClient, media: MediaStore) -> None:
    """c1 = alice, bob, dave(disabled); c2 = alice, carol; erin is in no conversation."""
    url = upload(client, "alice", samples.PNG).get_json()["url"]
    media_id = url.rsplit("/", 1)[1]
    assert client.get(url, headers=bearer("alice")).status_code == 200  # the uploader
    for user in ("bob", "carol", "erin"):  # not attached anywhere yet: only the uploader
        assert_error(client.get(url, headers=bearer(user)), 403, "forbidden")

    media.link(media_id, "c1")  # what the bridge does once a message attaching it is stored
    assert client.get(url, headers=bearer("bob")).data == samples.PNG
    for user in ("carol", "erin"):
        assert_error(client.get(url, headers=bearer(user)), 403, "forbidden")
    media.link(media_id, "c2")
    assert client.get(url, headers=bearer("carol")).status_code == 200
    assert_error(client.get(url, headers=bearer("erin")), 403, "forbidden")


def test_link_to_a_deleted_conversation_grants_nothing(client: FlaskClient, media: MediaStore) -> None:
    url = upload(client, "alice", samples.PNG).get_json()["url"]
    media.link(url.rsplit("/", 1)[1], "gone")
    assert_error(client.get(url, headers=bearer("erin")), 403, "forbidden")


@pytest.mark.parametrize("media_id", ["0123456789abcdef0123456789abcdef", "nope", "..", "%2e%2e%2fsecret.key"])
def test_unknown_ids_are_404(client: FlaskClient, media_id: str) -> None:
    assert_error(client.get(f"/v1/media/{media_id}", headers=bearer("alice")), 404, "not_found")


def test_openapi_documents_the_upload(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    post = doc["paths"]["/v1/media"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"201", "413", "415"} <= set(post["responses"])
    assert "/v1/media/{media_id}" in doc["paths"]
