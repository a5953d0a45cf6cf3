"""``chatmq retention``: the job as an operator runs it (a real process, the data dir's SQLite
store and media, the private Redis), the per-conversation policy over the default, and the lease
that keeps two purgers from running at once."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from chatmq.cli.retention_cmd import LEASE_KEY
from chatmq.core.config import Settings
from chatmq.core.lifecycle import DAY_MS
from chatmq.core.media import open_media_store
from chatmq.core.store import open_store
from chatmq.core.store.base import NewMessage, now_ms

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def run(data_dir: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatmq.cli", "retention", "--once", "--data-dir", str(data_dir),
                           "--redis-url", redis_url, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_one_pass_purges_by_policy_and_respects_the_lease(data_dir: Path, redis_url: str,
                                                          redis_client: redis.Redis) -> None:
    settings = Settings(data_dir=data_dir)
    store = open_store(settings.resolved_store_url)
    media = open_media_store(settings)
    try:
        store.create_user("alice", "")
        for conv in ("week", "default", "forever"):
            store.create_conversation(conv, ["alice"])
        store.set_retention("week", 7)
        store.set_retention("forever", 0)
        upload = media.put("alice", io.BytesIO(b"old picture"), "image/png")
        media.link(upload.id, "week")
        old, young = now_ms() - 40 * DAY_MS, now_ms() - 3 * DAY_MS
        for conv in ("week", "default", "forever"):
            attachments = ({"media_id": upload.id, "mime": "image/png"},) if conv == "week" else ()
            store.append([NewMessage(conv, "alice", f"{conv}-old", "old", old, attachments),
                          NewMessage(conv, "alice", f"{conv}-young", "young", young)])

        redis_client.set(LEASE_KEY, "elsewhere#1", px=60_000)
        held = run(data_dir, redis_url, "--days", "30")
        assert held.returncode == 0, held.stderr
        assert "another process holds" in held.stderr
        assert store.get_conversation("week").first_seq == 1  # type: ignore[union-attr]
        redis_client.delete(LEASE_KEY)

        done = run(data_dir, redis_url, "--days", "30")
        assert done.returncode == 0, done.stderr
        first = {c.id: c.first_seq for c in store.list_conversations()}
        assert first == {"week": 2, "default": 2, "forever": 1}
        assert [m.body for m in store.history("week").messages] == ["young"]
        assert media.get(upload.id) is None
        assert redis_client.get(LEASE_KEY) is None  # released after the pass
    finally:
        media.close()
        store.close()
