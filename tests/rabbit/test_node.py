"""A private RabbitMQ node: MQTT QoS 1 through it, and nothing left running after it stops."""

from __future__ import annotations

import pytest

from tests.rabbit.mqtt import Device
from tests.rabbitmq import RabbitCluster, RabbitNode, session_members, unavailable_reason


def test_qos1_message_through_a_private_node(rabbit_node: RabbitNode) -> None:
    receiver = Device(rabbit_node, "receiver")
    sender = Device(rabbit_node, "sender")
    try:
        receiver.subscribe("chat/c1/msg/#")
        sender.publish("chat/c1/msg/alice", b"hello over rabbit")
        message = receiver.receive()
        assert (message.topic, message.payload, message.qos) == ("chat/c1/msg/alice", b"hello over rabbit", 1)
    finally:
        sender.close()
        receiver.close()


def test_the_node_is_private(rabbit_node: RabbitNode) -> None:
    """Its own ports, its own epmd, never the machine's node (5672/15672/25672/1883, epmd 4369)."""
    ports = {rabbit_node.amqp_port, rabbit_node.dist_port, rabbit_node.mqtt_port, rabbit_node.ws_port,
             rabbit_node.management_port, rabbit_node.epmd.port}
    assert not ports & {5672, 15672, 25672, 1883, 4369}
    assert rabbit_node.node != "rabbit@localhost"
    assert rabbit_node.ctl("eval", "node().").strip() == f"'{rabbit_node.node}'"
    plugins = rabbit_node.ctl("eval", "[A || {A, _, _} <- application:which_applications()].")
    for plugin in ("rabbitmq_mqtt", "rabbitmq_web_mqtt", "rabbitmq_auth_backend_http", "rabbitmq_management"):
        assert plugin in plugins


def test_stop_leaves_no_process_behind() -> None:
    """rabbitmq-server's VM outlives its script: stop() must end every process of the node's session,
    after a clean stop and after a crash (kill) alike."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"RabbitMQ cannot run here: {reason}")
    cluster = RabbitCluster(size=1).start()
    node = cluster.nodes[0]
    sid = node.process.pid if node.process else 0
    assert len(session_members(sid)) >= 2  # the script and beam.smp, at least
    node.kill()
    assert session_members(sid) == set()
    node.start()  # same ports, same data
    sid = node.process.pid if node.process else 0
    cluster.stop()
    assert session_members(sid) == set()
    assert cluster.epmd.process is not None and cluster.epmd.process.poll() is not None
