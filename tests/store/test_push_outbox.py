"""The Store contract for the notifier: the delivery outbox written with each change, push
targets, mutes, deliveries (ordering, collapse, retries, dead letters) and webhook subscriptions.
Runs against every backend (the ``store`` fixture), the sharded-query spy included."""

from __future__ import annotations

import pytest

from chatmq.core.store.base import (
    DELIVERED,
    DELIVERY_CANCELLED,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    DELIVERY_PUSH,
    DELIVERY_WEBHOOK,
    EVENT_CREATED,
    EVENT_MEMBER_ADDED,
    EVENT_MEMBER_REMOVED,
    OUTBOX_EVENT,
    OUTBOX_MESSAGE,
    OUTBOX_READ,
    AlreadyExists,
    Attempt,
    Collapse,
    Delivery,
    DispatchBatch,
    PushTarget,
    ReceiptUpdate,
    Store,
    Webhook,
)
from tests.store.helpers import TS, msg, seed

pytestmark = pytest.mark.timeout(30)


def record(store: Store, delivery_id: str, version: int, state: str, next_at: int, error: str | None) -> bool:
    (done,) = store.record_attempts([Attempt(delivery_id, version, state, next_at, error)])
    return done


def drain(store: Store) -> list:
    entries = store.pending_outbox()
    store.delete_outbox([e.id for e in entries])
    return entries


# --- the outbox ---------------------------------------------------------------------------------


def test_outbox_records_every_stored_message_once_in_write_order(store: Store) -> None:
    seed(store, ("general", "random"))
    drain(store)  # the conversations' created events
    store.append([msg("general", "alice", "a1"), msg("random", "bob", "b1"), msg("general", "bob", "b2")])
    store.append([msg("general", "alice", "a1"), msg("general", "alice", "a3")])  # a1 is a duplicate
    entries = store.pending_outbox()
    assert [(e.kind, e.conv, e.seq, e.user) for e in entries] == [
        (OUTBOX_MESSAGE, "general", 1, "alice"),
        (OUTBOX_MESSAGE, "random", 1, "bob"),
        (OUTBOX_MESSAGE, "general", 2, "bob"),
        (OUTBOX_MESSAGE, "general", 3, "alice"),
    ]
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert all(e.ts == TS for e in entries)
    assert [e.seq for e in store.pending_outbox(limit=2)] == [1, 1]
    store.delete_outbox([entries[0].id, entries[1].id])
    store.delete_outbox([entries[0].id])  # idempotent
    assert [e.seq for e in store.pending_outbox()] == [2, 3]


def test_outbox_records_conversation_events_and_read_markers(store: Store) -> None:
    seed(store, ())
    store.create_conversation("team", ["alice", "bob"], title="T")
    store.add_member("team", "carol")
    store.remove_member("team", "bob")
    store.append([msg("team", "alice", "a1"), msg("team", "alice", "a2")])
    store.apply_receipts([
        ReceiptUpdate("team", "carol", 1, "delivered", TS),  # not a read: nothing to clear
        ReceiptUpdate("team", "carol", 2, "read", TS + 1),
        ReceiptUpdate("team", "carol", 1, "read", TS + 2),  # did not move: nothing
    ])  # fmt: skip
    entries = store.pending_outbox()
    kinds = [(e.kind, e.event.kind if e.event else None, e.user, e.seq) for e in entries]
    assert kinds == [
        (OUTBOX_EVENT, EVENT_CREATED, None, 0),
        (OUTBOX_EVENT, EVENT_MEMBER_ADDED, "carol", 0),
        (OUTBOX_EVENT, EVENT_MEMBER_REMOVED, "bob", 0),
        (OUTBOX_MESSAGE, None, "alice", 1),
        (OUTBOX_MESSAGE, None, "alice", 2),
        (OUTBOX_READ, None, "carol", 2),
    ]
    created = entries[0].event
    assert created is not None and created.title == "T" and created.recipients == ("alice", "bob")
    assert entries[2].event is not None and "bob" in entries[2].event.recipients
    assert entries[5].ts == TS + 1


# --- push targets and mutes ---------------------------------------------------------------------


def test_push_targets_register_list_replace_delete(store: Store) -> None:
    phone = store.put_push_target(PushTarget("alice", "phone", "fcm", "tok-1", "app", preview=False))
    assert phone.updated_at > 0
    store.put_push_target(PushTarget("alice", "tablet", "apns", "tok-2"))
    store.put_push_target(PushTarget("bob", "phone", "fcm", "tok-3"))
    assert [(t.user, t.device, t.token, t.preview, t.app_id) for t in store.push_targets(["alice", "bob", "x"])] == [
        ("alice", "phone", "tok-1", False, "app"),
        ("alice", "tablet", "tok-2", True, None),
        ("bob", "phone", "tok-3", True, None),
    ]
    store.put_push_target(PushTarget("alice", "phone", "fcm", "tok-4"))  # a new token for the same device
    assert [t.token for t in store.push_targets(["alice"])] == ["tok-4", "tok-2"]
    store.put_push_target(PushTarget("carol", "phone", "fcm", "tok-3"))  # bob's phone now belongs to carol
    assert store.push_targets(["bob"]) == []
    assert [t.key for t in store.push_targets(["carol"])] == ["carol/phone"]
    assert store.delete_push_tokens("fcm", ["tok-4", "tok-2", "nope"]) == 1  # tok-2 is an APNs token
    assert [t.device for t in store.push_targets(["alice"])] == ["tablet"]
    assert store.delete_push_target("alice", "tablet") is True
    assert store.delete_push_target("alice", "tablet") is False
    assert store.push_targets(["alice"]) == [] and store.push_targets([]) == []


def test_mutes(store: Store) -> None:
    seed(store)
    assert store.mute("general", "alice") is None
    store.set_mute("general", "alice", 0)  # until unmuted
    store.set_mute("general", "bob", TS + 1000)
    store.set_mute("other", "carol", 0)
    assert store.mute("general", "alice") == 0 and store.mute("general", "bob") == TS + 1000
    assert store.muted_members("general", ["alice", "bob", "carol"], TS) == {"alice", "bob"}
    assert store.muted_members("general", ["alice", "bob", "carol"], TS + 1000) == {"alice"}  # bob's lapsed
    assert store.muted_members("general", ["bob"], TS) == {"bob"}
    store.set_mute("general", "alice", None)
    assert store.mute("general", "alice") is None
    assert store.muted_members("general", ["alice"], TS) == set()


# --- deliveries ---------------------------------------------------------------------------------


def delivery(did: str, key: str = "k", channel: str = DELIVERY_WEBHOOK, **payload: object) -> Delivery:
    return Delivery(did, channel, "t", key, dict(payload) or {"id": did})


def test_deliveries_are_written_once_and_go_out_in_order_per_key(store: Store) -> None:
    assert store.add_deliveries([delivery("a1", "a"), delivery("b1", "b"), delivery("a2", "a")]) == 3
    assert store.add_deliveries([delivery("a1", "a", x=1), delivery("a3", "a")]) == 1  # a1 exists: untouched
    assert store.get_delivery("a1").payload == {"id": "a1"}  # type: ignore[union-attr]
    assert store.get_delivery("nope") is None
    due = store.due_deliveries(now=1)
    assert [d.id for d in due] == ["a1", "b1"]  # only the head of each key
    assert due[0].n < due[1].n and due[0].created_at > 0
    assert [d.id for d in store.due_deliveries(now=1, exclude=["a1"])] == ["b1"]
    assert [d.id for d in store.due_deliveries(now=1, limit=1)] == ["a1"]

    # a failed attempt: a1 waits for its retry, and a2 behind it waits too
    assert record(store, "a1", 0, DELIVERY_PENDING, 100, "503") is True
    assert [d.id for d in store.due_deliveries(now=50)] == ["b1"]
    a1 = store.get_delivery("a1")
    assert a1 is not None and a1.attempts == 1 and a1.last_error == "503" and a1.next_at == 100
    assert [d.id for d in store.due_deliveries(now=100)] == ["a1", "b1"]
    assert record(store, "a1", 0, DELIVERED, 100, None) is True
    assert [d.id for d in store.due_deliveries(now=100)] == ["b1", "a2"]  # ascending n
    # retries exhausted: dead, and the key moves on
    assert record(store, "a2", 0, DELIVERY_DEAD, 100, "gave up") is True
    assert [d.id for d in store.due_deliveries(now=100)] == ["b1", "a3"]
    assert [d.id for d in store.list_deliveries(state=DELIVERY_DEAD)] == ["a2"]
    assert store.latest_delivery("a").id == "a3"  # type: ignore[union-attr]
    assert store.latest_delivery("zzz") is None


def test_a_payload_replaced_during_an_attempt_is_not_marked_delivered(store: Store) -> None:
    store.add_deliveries([delivery("p", "p", DELIVERY_PUSH, seq=1)])
    sent = store.due_deliveries(now=1)[0]
    assert store.replace_pending_payload("p", {"seq": 2}) is True  # a newer message collapsed into it
    assert record(store, "p", sent.version, DELIVERED, 1, None) is False
    now = store.get_delivery("p")
    assert now is not None and now.state == DELIVERY_PENDING and now.payload == {"seq": 2} and now.version == 1
    assert record(store, "p", now.version, DELIVERED, 1, None) is True
    assert store.replace_pending_payload("p", {"seq": 3}) is False  # delivered: a new delivery is needed
    assert store.get_delivery("p").payload == {"seq": 2}  # type: ignore[union-attr]


def test_replay_cancel_list_and_prune(store: Store) -> None:
    store.add_deliveries([delivery("w1", "k1"), delivery("w2", "k2"), delivery("p1", "k3", DELIVERY_PUSH)])
    record(store, "w1", 0, DELIVERY_DEAD, 0, "refused")
    record(store, "w2", 0, DELIVERED, 0, None)
    assert store.set_delivery_state("p1", DELIVERY_CANCELLED) is True
    assert store.set_delivery_state("nope", DELIVERY_CANCELLED) is False
    assert [d.id for d in store.list_deliveries()] == ["p1", "w2", "w1"]
    assert [d.id for d in store.list_deliveries(channel=DELIVERY_WEBHOOK)] == ["w2", "w1"]
    assert [d.id for d in store.list_deliveries(channel=DELIVERY_PUSH, state=DELIVERY_CANCELLED)] == ["p1"]
    assert store.list_deliveries(target="other") == []
    assert store.replay_deliveries(["w1", "w2", "nope"], now=5) == 2
    w1 = store.get_delivery("w1")
    assert w1 is not None and w1.state == DELIVERY_PENDING and w1.attempts == 0 and w1.next_at == 5
    assert w1.last_error is None and w1.version == 1
    assert {d.id for d in store.due_deliveries(now=5)} == {"w1", "w2"}
    record(store, "w1", 1, DELIVERY_DEAD, 0, "refused")
    record(store, "w2", 1, DELIVERED, 0, None)
    assert store.record_attempts([]) == []
    assert store.prune_deliveries(before=2**62) == 2  # w2 delivered, p1 cancelled; w1 dead stays
    assert [d.id for d in store.list_deliveries()] == ["w1"]


# --- webhook subscriptions ----------------------------------------------------------------------


def test_webhook_subscriptions(store: Store) -> None:
    hook = store.add_webhook(Webhook("crm", "http://127.0.0.1:9/hook", "s3cret", ("message.created",)))
    assert hook.created_at > 0
    store.add_webhook(Webhook("audit", "http://127.0.0.1:9/a", "x", ("member.added", "member.removed")))
    with pytest.raises(AlreadyExists):
        store.add_webhook(Webhook("crm", "http://other", "y", ()))
    assert [(w.id, w.url, w.events) for w in store.webhooks()] == [
        ("audit", "http://127.0.0.1:9/a", ("member.added", "member.removed")),
        ("crm", "http://127.0.0.1:9/hook", ("message.created",)),
    ]
    assert store.remove_webhook("crm") is True and store.remove_webhook("crm") is False
    assert [w.id for w in store.webhooks()] == ["audit"]


def test_one_dispatch_pass_is_one_write_and_safe_to_repeat(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "a1"), msg("general", "alice", "a2")])
    consumed = [e.id for e in store.pending_outbox()]
    store.add_deliveries([delivery("waiting", "k1", DELIVERY_PUSH, seq=1), delivery("gone", "k2", DELIVERY_PUSH),
                          delivery("sent", "k3", DELIVERY_PUSH, seq=1)])
    record(store, "sent", 0, DELIVERED, 0, None)
    batch = DispatchBatch(
        deliveries=[delivery("new", "k4")],
        collapses=[Collapse("waiting", {"seq": 2}, delivery("waiting-instead", "k1")),
                   Collapse("sent", {"seq": 2}, delivery("sent-instead", "k3"))],
        cancels=["gone", "sent"],  # a delivered one is not cancelled
        consumed=consumed,
    )
    store.apply_dispatch(batch)
    store.apply_dispatch(batch)  # a pass repeated after a crash adds nothing
    assert store.pending_outbox() == []
    states = {d.id: (d.state, d.payload, d.version) for d in store.list_deliveries()}
    assert states["waiting"] == (DELIVERY_PENDING, {"seq": 2}, 2)  # replaced (twice: same payload)
    assert "waiting-instead" not in states
    assert states["sent"][0] == DELIVERED and states["sent-instead"][0] == DELIVERY_PENDING  # went out: a new one
    assert states["gone"][0] == DELIVERY_CANCELLED and states["new"][0] == DELIVERY_PENDING
    assert len(states) == 5
    latest = store.latest_deliveries(["k1", "k3", "k4", "none"])
    assert {k: d.id for k, d in latest.items()} == {"k1": "waiting", "k3": "sent-instead", "k4": "new"}
    assert store.latest_deliveries([]) == {}


def test_conversation_deliveries_and_redactions(store: Store) -> None:
    store.add_deliveries([delivery("a", "w:h:team_1"), delivery("b", "p:bob/phone:team_1", DELIVERY_PUSH),
                          delivery("c", "w:h:teamX1"), delivery("d", "w:h:other")])
    assert [d.id for d in store.conversation_deliveries("team_1")] == ["a", "b"]  # "_" is no wildcard
    store.apply_dispatch(DispatchBatch(redactions=[("a", {"erased": True})]))
    assert store.get_delivery("a").payload == {"erased": True}  # type: ignore[union-attr]
    assert store.conversation_deliveries("none") == []
