"""Mosquitto, fed by the sync, answers every publish and subscribe exactly as
chatcore.access.authorize does, over a table of chat topics and filters (ids valid throughout)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from adapters.mosquitto.sync import MosquittoSync
from chatcore.access import Action, Identity, authorize
from chatcore.config import SERVICE_USER, Settings
from chatcore.membership import MembershipView
from chatcore.store import Store
from tests.stack import RawClient

pytestmark = pytest.mark.timeout(60)

ME = "alice"  # member of c1 and c2; shares them with bob and carol; not with dave


def topics() -> list[str]:
    names = []
    for conv in ("c1", "c2", "solo", "nosuch"):
        names += [f"chat/{conv}/msg", f"chat/{conv}/receipts", f"chat/{conv}/other"]
        for user in (ME, "bob", "dave"):
            names += [f"chat/{conv}/{verb}/{user}" for verb in ("send", "typing", "receipt")]
    for user in (ME, "bob", "dave"):
        names += [f"user/{user}/ack", f"user/{user}/events", f"presence/{user}", f"presence/{user}/phone",
                  f"user/{user}/history/request", f"user/{user}/history/response", f"user/{user}/history/other"]
    return [*names, "elsewhere/topic", "user/alice", "chat/c1"]


FILTERS = [
    "chat/c1/typing/+", "chat/solo/typing/+", "presence/alice/+", "presence/bob/+", "chat/+/msg",
    "chat/c1/+", "chat/c1/send/+", "chat/c1/#", "user/alice/#", "presence/+", "#", "+/alice/ack",
    "user/alice/history/+", "user/+/history/response", "user/+/history/request",
]


def test_subscribe_answers_match_authorize(sync: MosquittoSync, store: Store,
                                           connect: Callable[..., RawClient]) -> None:
    view = MembershipView(store)
    view.refresh()
    me = connect(ME)
    for topic_filter in topics() + FILTERS:
        expected = authorize(Identity(ME), Action.SUBSCRIBE, topic_filter, view)
        assert me.subscribe(topic_filter) is expected, topic_filter


def test_publish_answers_match_authorize(sync: MosquittoSync, store: Store, settings: Settings,
                                         connect: Callable[..., RawClient]) -> None:
    view = MembershipView(store)
    view.refresh()
    observer = connect(SERVICE_USER, settings.service_password, client_id="observer")
    assert observer.subscribe("#")
    me = connect(ME)
    for topic in topics():
        me.publish(topic, topic.encode())
    me.publish("presence/alice/zz-end", b"end")  # allowed, and published last: the end marker
    arrived: set[str] = set()
    deadline = time.monotonic() + 10
    while True:
        topic, _ = observer.received.get(timeout=max(0.1, deadline - time.monotonic()))
        if topic == "presence/alice/zz-end":
            break
        arrived.add(topic)
    expected = {t for t in topics() if authorize(Identity(ME), Action.PUBLISH, t, view)}
    assert arrived == expected


def test_a_disabled_user_cannot_log_in(sync: MosquittoSync, store: Store, connect: Callable[..., RawClient]) -> None:
    store.set_disabled("dave", True)
    deadline = time.monotonic() + 10
    while not connect("dave", client_id=f"dave-{time.monotonic()}").refused:
        assert time.monotonic() < deadline, "dave was not disabled in Mosquitto"
        time.sleep(0.1)
    store.set_disabled("dave", False)
    deadline = time.monotonic() + 10
    while connect("dave", client_id=f"dave-{time.monotonic()}").refused:
        assert time.monotonic() < deadline, "dave was not enabled again"
        time.sleep(0.1)


def test_full_sync_repairs_drift(sync: MosquittoSync, settings: Settings) -> None:
    """What someone changed behind chatmq's back is put right by the next full sync."""
    from adapters.mosquitto.control import DynsecClient

    assert settings.mosquitto_url
    with DynsecClient(settings.mosquitto_url) as admin:
        admin.call("removeRoleACL", rolename="chatmq-user-alice", acltype="publishClientSend",
                   topic="chat/c1/send/alice")
        admin.call("createClient", username="leftover", textname="chatmq")
    assert sync.full_sync() == 2  # the ACL back, the stray client deleted
    with DynsecClient(settings.mosquitto_url) as admin:
        names = {c["username"] for c in admin.call("listClients", verbose=True)["clients"]}
    assert "leftover" not in names and {"alice", SERVICE_USER} <= names


def test_an_idle_sync_reads_two_versions_not_the_user_list(sync: MosquittoSync, store: Store) -> None:
    """Polled twice a second, the sync must not list every user or membership each time (the
    fixture's thread polls every 0.1 s meanwhile)."""
    calls: list[str] = []
    for name in ("list_users", "memberships", "membership_changes"):
        real = getattr(store, name)
        setattr(store, name, lambda *a, _name=name, _real=real: (calls.append(_name), _real(*a))[1])

    def applied(index: int, version: int) -> bool:
        return sync._seen is not None and sync._seen[index] == version

    try:
        time.sleep(0.5)
        assert calls == []
        store.add_member("c1", "dave")  # a membership change: read the changed conversation only
        version = store.membership_version()
        deadline = time.monotonic() + 5
        while not applied(0, version):
            assert time.monotonic() < deadline, "the sync never applied the membership change"
            time.sleep(0.02)
        assert calls == ["membership_changes"]
        store.set_disabled("dave", True)  # a user change: the user list, once
        version = store.users_version()
        while not applied(1, version):
            assert time.monotonic() < deadline, "the sync never applied the user change"
            time.sleep(0.02)
        time.sleep(0.3)
        assert calls == ["membership_changes", "list_users"]
    finally:
        for name in ("list_users", "memberships", "membership_changes"):
            delattr(store, name)
