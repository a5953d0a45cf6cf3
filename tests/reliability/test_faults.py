"""The fault harness, short: one kill -9 and restart of every component (and of a second bridge)
under load, then the checker. The full run (20 cycles) is `python -m bench.faults`; see
docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cluster import COMPONENTS, SECOND_BRIDGE
from bench.faults import Options, run


def _fast(**overrides: object) -> Options:
    options = Options(cycles=1, users=4, convs=3, members=3, rate=25.0, settle_s=40.0)
    options.down_s, options.up_s = (0.1, 0.3), (0.5, 0.8)
    for key, value in overrides.items():
        setattr(options, key, value)
    return options


@pytest.mark.timeout(120)
def test_every_component_killed_and_restarted_loses_nothing(tmp_path: Path) -> None:
    outcome = run(_fast(), tmp_path / "faults", log=lambda *_: None)
    assert outcome.kills == dict.fromkeys(COMPONENTS, 1)
    report = outcome.report
    assert report.sent > 50 and report.acked == report.sent, report.as_dict()
    assert report.ok, report.as_dict()
    assert report.stored == report.acked


@pytest.mark.timeout(120)
def test_two_bridges_at_once_store_each_send_once_in_order(tmp_path: Path) -> None:
    """MQTT 3.1.1 has no shared subscriptions: both bridges receive every send. The store's atomic
    append (dedup by client_msg_id, gapless seq under a write lock) must still keep one copy each."""
    options = _fast(bridges=2, components=("bridge", SECOND_BRIDGE))
    outcome = run(options, tmp_path / "faults", log=lambda *_: None)
    report = outcome.report
    assert report.sent > 50 and report.acked == report.sent, report.as_dict()
    assert report.ok, report.as_dict()
    assert report.stored == report.acked
