"""The upgrade canary of the broker's one seam over amqtt (chatmq/broker/amqtt_seam.py).

It fails, with a list of what moved, when the installed amqtt is not the release the seam was
written against or no longer has an internal the seam relies on (an attribute, a method's
parameters, the amqtt code that calls a method the broker overrides). And it keeps the seam the
only place: no other broker module names an amqtt internal (an override included), and no broker
class outside the seam derives from an amqtt class.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import amqtt
import pytest
from amqtt.broker import Broker
from amqtt.mqtt.protocol.handler import ProtocolHandler

import chatmq.broker
from chatmq.broker import amqtt_seam
from chatmq.broker.amqtt_seam import INTERNALS, Internal, moved

BROKER_DIR = Path(chatmq.broker.__file__).parent
SEAM = "amqtt_seam"
# Private names chatmq's own classes define that amqtt happens to define too: not amqtt's.
OWN = {
    "_lock",  # MembershipRefresher's
    "_loop",  # RedisListener's
    "_stats",  # the admin hook's stats command
    "_session",  # SessionStates' session
}
_NAMED = re.compile(r"(?:\.|\bdef\s+|\")(_[a-z]\w*)")


def _amqtt_private_names() -> set[str]:
    names: set[str] = set()
    for path in Path(amqtt.__file__).parent.rglob("*.py"):
        names |= set(re.findall(r"(?:\bdef\s+|\.)(_[a-z]\w*)", path.read_text()))
    return names


def _modules() -> dict[str, str]:
    """Every broker module but the seam, by its short name (``chatbroker``, ``hooks.admin``)."""
    found = {}
    for path in sorted(BROKER_DIR.rglob("*.py")):
        name = ".".join(path.relative_to(BROKER_DIR).with_suffix("").parts)
        if name != SEAM:
            found[name] = path.read_text()
    return found


def test_nothing_the_seam_relies_on_moved() -> None:
    problems = moved()
    assert not problems, "amqtt changed under the broker's seam:\n  " + "\n  ".join(problems)


def test_only_the_seam_names_amqtt_internals() -> None:
    table = {item.name for item in INTERNALS}
    private = _amqtt_private_names() - OWN
    stray = []
    for module, source in _modules().items():
        for name in sorted(set(_NAMED.findall(source)) & private):
            where = "in the seam's table" if name in table else "not in the seam's table"
            stray.append(f"chatmq/broker/{module}: {name} ({where}: only the seam may touch it)")
    assert not stray, "amqtt internals outside the seam:\n  " + "\n  ".join(stray)


def test_the_seam_names_every_internal_of_its_table() -> None:
    seam = Path(amqtt_seam.__file__).read_text()
    table = seam[seam.index("INTERNALS: tuple"):]
    code = table[table.index("\n)\n"):]  # the module after the table
    unused = [item.name for item in INTERNALS if not re.search(rf"\b{re.escape(item.name)}\b", code)]
    assert not unused, f"listed in INTERNALS but not used by the seam: {unused}"
    assert all(item.why for item in INTERNALS)


def test_only_the_seam_derives_from_amqtt_classes() -> None:
    bases = re.compile(r"^class \w+\(([^)]*)\)", re.MULTILINE)
    amqtt_classes = {"Broker", "BrokerProtocolHandler", "ProtocolHandler", "Session", "ApplicationMessage"}
    found = [f"chatmq/broker/{module}: class ({match})" for module, source in _modules().items()
             for match in bases.findall(source) if set(re.split(r"[,\s]+", match)) & amqtt_classes]  # fmt: skip
    assert not found, "amqtt classes extended outside the seam:\n  " + "\n  ".join(found)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (Internal("amqtt.broker.Broker", "_no_such_method", "override", "x", ()), "no longer defined"),
        (Internal("amqtt.broker.Broker", "_handle_disconnect", "override", "x", ("client_session", "handler")),
         "parameters are now"),
        (Internal("amqtt.broker.Broker", "_delete_session", "override", "x", ("client_id",),
                  ("amqtt.broker.Broker.shutdown",)), "no longer calls it"),
        (Internal("amqtt.broker.Broker", "_no_such_state", "read", "x"), "no longer set by amqtt"),
        (Internal("amqtt.gone.Thing", "_x", "read", "x"), "is gone"),
    ],
)
def test_the_canary_names_what_moved(item: Internal, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqtt_seam, "INTERNALS", (item,))
    [problem] = [line for line in moved() if item.name in line]
    assert expected in problem and item.why in problem


def test_the_canary_names_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqtt_seam, "AMQTT_VERSION", "0.11.0")
    monkeypatch.setattr(amqtt_seam, "INTERNALS", ())
    assert moved() == [f"amqtt {importlib.metadata.version('amqtt')} installed, the seam was written against 0.11.0"]


def test_the_canary_reads_instance_attributes_from_the_source() -> None:
    """Attributes amqtt sets in ``__init__`` or ``start`` count as present (they are not class members)."""
    assert "self._write_lock = asyncio.Lock()" in inspect.getsource(ProtocolHandler)
    assert "_sessions" in inspect.getsource(Broker.__init__)
    assert importlib.util.find_spec("amqtt") is not None
