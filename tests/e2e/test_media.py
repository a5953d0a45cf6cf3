"""Media through the real stack (`chatmq up`: granian API, bridge, broker): upload over HTTP,
attach through MQTT, download as a member; strangers and other people's media are refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from email.message import Message
from typing import Any

import pytest

from tests.media import samples
from tests.stack import Stack

pytestmark = pytest.mark.timeout(90)


def http(stack: Stack, method: str, path: str, token: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """Status, headers (looked up case-insensitively: HTTP/1.1 servers may send them lowercased), body."""
    request = urllib.request.Request(stack.base_url + path, data=body, method=method, headers=headers or {})
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def upload(stack: Stack, token: str, data: bytes, name: str, mime: str) -> tuple[int, Any]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {mime}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, _, raw = http(stack, "POST", "/v1/media", token, body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return status, json.loads(raw)


def test_upload_attach_download(stack: Stack, unique: Callable[[str], str]) -> None:
    alice, bob, erin, conv = unique("alice"), unique("bob"), unique("erin"), unique("conv")
    for user in (alice, bob, erin):
        stack.add_user(user)
    stack.create_conv(conv, alice, bob)
    tokens = {user: stack.token(user) for user in (alice, bob, erin)}

    photo = samples.PNG + bytes(300_000)  # bigger than the API's JSON request cap
    status, media = upload(stack, tokens[alice], photo, "photo.png", "image/png")
    assert status == 201, media
    assert (media["mime"], media["size"]) == ("image/png", len(photo))
    status, lie = upload(stack, tokens[alice], samples.PDF, "photo.png", "image/png")
    assert (status, lie["error"]["code"]) == (415, "unsupported_media_type")
    _, bobs = upload(stack, tokens[bob], samples.TEXT, "b.txt", "text/plain")

    status, _, _ = http(stack, "GET", media["url"], tokens[bob])
    assert status == 403  # not attached anywhere yet

    with stack.client(alice) as client:
        refused = client.send(conv, "not mine", attachments=[bobs]).result(30)
        assert refused.status == "rejected" and refused.error is not None
        assert refused.error["code"] == "bad_attachment"
        ack = client.send(conv, "a photo", attachments=[media]).result(30)
        assert ack.status == "received" and ack.seq == 1
    status, page = stack.http("GET", f"/v1/conversations/{conv}/messages", token=tokens[bob])
    assert status == 200 and [m["attachments"] for m in page["messages"]] == [[media]]

    status, headers, data = http(stack, "GET", media["url"], tokens[bob])
    assert status == 200 and data == photo
    assert headers["Content-Type"] == "image/png" and headers["Content-Length"] == str(len(photo))
    assert headers["ETag"] == f'"{media["sha256"]}"' and headers["X-Content-Type-Options"] == "nosniff"
    assert http(stack, "GET", media["url"], tokens[erin])[0] == 403
    assert http(stack, "GET", media["url"], "bad-token")[0] == 401
    assert http(stack, "GET", "/v1/media/" + "0" * 32, tokens[alice])[0] == 404
