"""The real stack (``chatmq up``: broker, bridge, notifier, API) with a local push gateway and a
webhook receiver: sends over HTTP take the bridge's path (one writer, MQTT semantics), members
with a live MQTT device get no push, offline ones do, muted ones do not, webhooks fire."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from chatmq.cli.localredis import LocalRedis
from tests.e2e.helpers import poll, raw, send
from tests.notify.receiver import Receiver
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    gateway, hooks = Receiver().start(), Receiver().start()
    yield gateway, hooks
    gateway.stop()
    hooks.stop()


@pytest.fixture(scope="module")
def push_stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis, receivers: tuple[Receiver, Receiver]
) -> Iterator[Stack]:
    gateway, hooks = receivers
    env = {"CHATMQ_PUSH_GATEWAY_URL": gateway.url + "/notify", "CHATMQ_PUSH_COLLAPSE_S": "0"}
    running = Stack(tmp_path_factory.mktemp("push") / "data", redis_server.url, env=env).start()
    try:  # a failed set-up must stop the stack too: its notifier would keep the shared Redis's lease
        for user in ("ann", "ben", "cat", "dan"):
            running.add_user(user)
        running.create_conv("crew", "ann", "ben", "cat", "dan")
        running.admin("webhook", "add", "sink", hooks.url + "/hooks", "--events", "message.created,member.added",
                      "--secret", "s3-0123456789abcdef")  # fmt: skip
    except BaseException:
        running.stop()
        raise
    yield running
    assert running.stop() == 0, running.log()


def post_message(stack: Stack, token: str, conv: str, body: object) -> tuple[int, dict]:
    return stack.http("POST", f"/v1/conversations/{conv}/messages", token=token, body=body)


def test_http_send_is_stored_once_in_order_with_mqtt_sends(push_stack: Stack) -> None:
    token = push_stack.token("ann")
    status, ack = post_message(push_stack, token, "crew", {"client_msg_id": "h1", "body": "over http"})
    assert status == 200, ack
    assert ack["status"] == "received" and ack["client_msg_id"] == "h1" and ack["conv"] == "crew"
    first = ack["seq"]
    again = post_message(push_stack, token, "crew", {"client_msg_id": "h1", "body": "over http"})
    assert again == (200, ack)  # idempotent: the original seq, nothing stored twice
    ann = raw(push_stack, "ann", "user/ann/ack")
    mqtt_ack = send(ann, "ann", "crew", "over mqtt", "q1")
    status, third = post_message(push_stack, token, "crew", {"client_msg_id": "h2", "body": "http again"})
    assert [first, mqtt_ack["seq"], third["seq"]] == [first, first + 1, first + 2]
    ann.close()
    status, page = push_stack.http("GET", f"/v1/conversations/crew/messages?after={first - 1}", token=token)
    assert [(m["seq"], m["client_msg_id"], m["body"]) for m in page["messages"]] == [
        (first, "h1", "over http"), (first + 1, "q1", "over mqtt"), (first + 2, "h2", "http again")]


def test_http_send_validation_is_the_mqtt_one(push_stack: Stack) -> None:
    token = push_stack.token("ann")
    big = {"client_msg_id": "big", "body": "x" * 5000}
    assert post_message(push_stack, token, "crew", big)[0] == 413
    assert post_message(push_stack, token, "crew", big)[1]["error"]["code"] == "too_large"
    status, body = post_message(push_stack, token, "crew", {"client_msg_id": "b", "body": 1})
    assert (status, body["error"]["code"]) == (400, "bad_payload")
    status, body = post_message(push_stack, token, "crew", {"client_msg_id": "e", "body": "x", "extra": 1})
    assert (status, body["error"]["code"]) == (400, "bad_payload")
    attachment = {"media_id": "0" * 32, "mime": "image/png", "size": 1}
    with_media = {"client_msg_id": "a", "body": "x", "attachments": [attachment]}
    status, body = post_message(push_stack, token, "crew", with_media)
    assert (status, body["error"]["code"]) == (400, "bad_attachment")  # decided by the bridge
    assert post_message(push_stack, token, "nope", {"client_msg_id": "n", "body": "x"})[0] == 404
    push_stack.add_user("eve")
    assert post_message(push_stack, push_stack.token("eve"), "crew", {"client_msg_id": "n", "body": "x"})[0] == 403
    assert post_message(push_stack, "", "crew", {"client_msg_id": "n", "body": "x"})[0] == 401


def test_offline_members_are_pushed_online_and_muted_ones_are_not(
    push_stack: Stack, receivers: tuple[Receiver, Receiver]
) -> None:
    gateway, hooks = receivers
    for user in ("ben", "cat", "dan"):
        status, body = push_stack.http("POST", "/v1/push/targets", token=push_stack.token(user),
                                       body={"device": "phone", "platform": "fcm", "token": f"fcm-{user}"})
        assert status == 201, body
    status, _ = push_stack.http("PUT", "/v1/conversations/crew/mute", token=push_stack.token("dan"), body={})
    assert status == 200
    with push_stack.client("cat", device="laptop"):  # cat has a live device: no push
        poll(lambda: push_stack.http("GET", "/v1/presence/cat", token=push_stack.token("ann"))[1]["status"]
             == "online")
        start = len(gateway.received())
        status, ack = post_message(push_stack, push_stack.token("ann"), "crew",
                                   {"client_msg_id": "push-1", "body": "wake up"})
        assert status == 200
        seen = gateway.wait_for(lambda rs: len(rs) > start, timeout=20)
        time.sleep(1.0)  # anything else would have come by now
        fresh = [r.json()["notification"] for r in gateway.received()[start:]]
        assert [(n["user"], n["seq"], n["preview"]) for n in fresh] == [("ben", ack["seq"], "wake up")], fresh
        assert seen[start].header("Idempotency-Key") == f"ben/phone:crew:{ack['seq']}:message"
    events = hooks.wait_for(lambda rs: any(json.loads(r.body)["id"] == f"m:crew:{ack['seq']}" for r in rs))
    assert all(r.path == "/hooks" for r in events)
    log = push_stack.admin("push", "log", "ben/phone").stdout
    assert f"p:ben/phone:crew:{ack['seq']}" in log and "delivered" in log
    assert "sink" in push_stack.admin("webhook", "list").stdout
