"""A three-node RabbitMQ cluster on this machine: devices on different nodes reach each other, and a
persistent MQTT session (a quorum queue, as RabbitMQ 3.10 recommends for durable MQTT sessions in a
cluster) keeps its messages when the node it was connected to is killed."""

from __future__ import annotations

import json
import time

import pytest

from tests.rabbit.mqtt import Device
from tests.rabbitmq import RabbitCluster

pytestmark = pytest.mark.slow


def test_the_cluster_runs_three_disc_nodes(rabbit_cluster: RabbitCluster) -> None:
    names = {node.node for node in rabbit_cluster.nodes}
    for node in rabbit_cluster.nodes:  # every member sees all three running
        assert rabbit_cluster.running_members(via=node) == names
    status = json.loads(rabbit_cluster.nodes[2].ctl("cluster_status", "--formatter", "json"))
    assert set(status["disk_nodes"]) == names


def test_a_message_published_on_one_node_reaches_devices_on_the_others(rabbit_cluster: RabbitCluster) -> None:
    first, second, third = rabbit_cluster.nodes
    bob, carol = Device(second, "bob.phone"), Device(third, "carol.laptop")
    alice = Device(first, "alice.phone")
    try:
        for device in (bob, carol):
            device.subscribe("chat/room1/msg/+")
        for n in range(20):
            alice.publish("chat/room1/msg/alice", f"m{n}".encode())
        for device in (bob, carol):
            got = [device.receive().payload for _ in range(20)]
            assert got == [f"m{n}".encode() for n in range(20)]  # all, once, in order
            assert device.inbox.empty()
    finally:
        for device in (alice, bob, carol):
            device.close()


def test_a_persistent_session_is_a_quorum_queue_and_outlives_its_node(rabbit_cluster: RabbitCluster) -> None:
    """The bridge's kind of session (clean_session=false, QoS 1): its queue is a replicated quorum
    queue, so a kill -9 of the node it was on loses none of what was published meanwhile; the client
    resumes the same session on another node."""
    first, second, third = rabbit_cluster.nodes
    bridge = Device(first, "bridge-durable", clean=False)
    bridge.subscribe("chat/+/send/+")
    bridge.close()  # offline: messages now wait in its queue
    queues = [line.split("\t") for line in second.ctl("list_queues", "-q", "--no-table-headers",
                                                        "name", "type", "durable").splitlines()]
    assert ["mqtt-subscription-bridge-durableqos1", "quorum", "true"] in queues
    sender = Device(second, "dave.phone")
    try:
        for n in range(10):
            sender.publish("chat/room2/send/dave", f"before-{n}".encode())
        first.kill()  # the node the session was made on, and perhaps its queue's leader
        for n in range(10):
            sender.publish("chat/room2/send/dave", f"after-{n}".encode())
        resumed = Device(third, "bridge-durable", clean=False)
        try:
            got = [resumed.receive(20).payload for _ in range(20)]
            assert sorted(got) == sorted([f"before-{n}".encode() for n in range(10)]
                                         + [f"after-{n}".encode() for n in range(10)])
        finally:
            resumed.close()
    finally:
        sender.close()
        if not first.running:
            first.start()
            rabbit_cluster.wait_members(rabbit_cluster.nodes)


def test_retained_messages_are_node_local(rabbit_cluster: RabbitCluster) -> None:
    """RabbitMQ 3.10 keeps retained messages per node (docs/brokers.md says so, with what it means for
    the bridge's retained presence): a subscriber through another node does not get them."""
    first, second, _ = rabbit_cluster.nodes
    publisher = Device(first, "retainer")
    try:
        info = publisher.client.publish("presence/erin", b'{"status": "online"}', qos=1, retain=True)
        info.wait_for_publish(10)
        here, there = Device(first, "here"), Device(second, "there")
        try:
            for device in (here, there):
                device.subscribe("presence/erin")
            assert here.receive().payload == b'{"status": "online"}'
            time.sleep(1.0)
            assert there.inbox.empty()
        finally:
            here.close()
            there.close()
    finally:
        publisher.close()
