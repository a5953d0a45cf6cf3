"""Durability across a restart of `chatmq up` on the same data dir, and clean shutdown on signals."""

from __future__ import annotations

import signal
from pathlib import Path

from chatmq.cli.localredis import LocalRedis
from tests.stack import Stack


def test_messages_survive_restart_and_seq_continues(tmp_path: Path, redis_server: LocalRedis) -> None:
    data_dir = tmp_path / "data"
    first = Stack(data_dir, redis_server.url).start()
    try:
        first.add_user("ann")
        first.add_user("ben")
        first.create_conv("durable", "ann", "ben")
        with first.client("ann") as ann:
            acks = [ann.send("durable", f"before {i}").result(10) for i in range(5)]
        assert [a.seq for a in acks] == [1, 2, 3, 4, 5]
    finally:
        assert first.stop(signal.SIGINT) == 0, first.log()

    second = Stack(data_dir, redis_server.url).start()  # fresh ports, same data dir
    try:
        with second.client("ben") as ben:  # users and passwords survived
            assert ben.send("durable", "after restart").result(10).seq == 6
        status, page = second.http("GET", "/v1/conversations/durable/messages", token=second.token("ann"))
        assert status == 200
        assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5, 6]
        assert page["messages"][0]["body"] == "before 0"
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.log()
