"""Mosquitto, fed by the sync, answers the access cases (tests/access_cases.py) as the rule table
says, live: subscriptions, publishes, deliveries and wills.

One difference is Mosquitto's, and stated here as in adapters/mosquitto/roles.py: it checks a
last will against the publish ACLs, so a device may leave a will wherever it may publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from chatmq.adapters.mosquitto.sync import MosquittoSync
from chatmq.core.access import Action
from chatmq.core.config import SERVICE_USER, Settings
from chatmq.core.store import Store
from tests.access_cases import device_cases, live_verdicts, will_checked_as_publish
from tests.stack import RawClient

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("action", list(Action), ids=lambda action: action.value)
def test_mosquitto_answers_every_case(sync: MosquittoSync, settings: Settings,
                                      connect: Callable[..., RawClient], action: Action) -> None:
    assert settings.service_password
    cases = device_cases(action)
    verdicts = live_verdicts(connect, (SERVICE_USER, settings.service_password), cases)
    assert [case for case in cases if verdicts[case] is not will_checked_as_publish(case)] == []


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
    from chatmq.adapters.mosquitto.control import DynsecClient

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
