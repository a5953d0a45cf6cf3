"""The private RabbitMQ nodes and clusters tests start: they live in bench/rabbitmq.py (the benchmarks
and the failover harness start them too); this name stays for the tests that import it from here."""

from bench.rabbitmq import (
    PASSWORD,
    PLUGINS,
    USER,
    AuthHTTP,
    Epmd,
    RabbitCluster,
    RabbitNode,
    leftover_processes,
    session_members,
    unavailable_reason,
)

__all__ = ["PASSWORD", "PLUGINS", "USER", "AuthHTTP", "Epmd", "RabbitCluster", "RabbitNode",
           "leftover_processes", "session_members", "unavailable_reason"]
