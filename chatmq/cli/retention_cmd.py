"""``chatmq retention``: the retention job. It purges entries older than each conversation's
policy (``chatmq conv retention``, else CHATMQ_RETENTION_DAYS) in bounded batches
(chatmq.core.lifecycle), every CHATMQ_RETENTION_INTERVAL_S, or once with ``--once`` (cron).

Its own process, supervised by ``chatmq up`` like the notifier: a purge of a big backlog then
never delays a notification or a send's fan-out, and only needs the store, the media store and
Redis. Several may run (one per host, or a cron job beside ``chatmq up``): a pass runs only while
holding the lease ``chatmq:retention:lease`` (chatmq.core.leases), renewed between conversations, so
two processes never purge at once; one that loses its lease stops at the next conversation.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

import click

from chatmq.cli.settings_opts import make_settings, redis_option, store_options

log = logging.getLogger("chatmq.retention")

LEASE_KEY = "chatmq:retention:lease"
LEASE_TTL_MS = 60_000  # a dead purger blocks another this long at most


class LeaseLost(Exception):
    pass


@click.command("retention")
@store_options
@redis_option
@click.option("--once", is_flag=True, help="one pass, then exit (for cron); exit 0 also when another holds the lease")
@click.option("--days", type=click.IntRange(0, 36_500), default=None,
              help="the default policy for this run [env CHATMQ_RETENTION_DAYS; 0 = forever]")
def retention(once: bool, days: int | None, **options: Any) -> None:
    """Purge history older than the retention policy, in bounded batches (docs/data-lifecycle.md)."""
    from chatmq.core import redisconn
    from chatmq.core.leases import Leases
    from chatmq.core.lifecycle import Lifecycle
    from chatmq.core.logs import configure
    from chatmq.core.media import open_media_store
    from chatmq.core.store import open_store

    settings = make_settings(**options)
    configure(settings.log_level, settings.log_format, settings.log_levels)
    default_days = settings.retention_days if days is None else days
    store = open_store(settings.resolved_store_url)
    media = open_media_store(settings)
    client = redisconn.connect(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    leases = Leases(client, f"{socket.gethostname()}-{os.getpid()}", LEASE_TTL_MS, key_of=lambda _p: LEASE_KEY)
    lifecycle = Lifecycle(store, media)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())

    def keep_lease(conv: str, removed: int) -> None:
        if stop.is_set() or not leases.renew(0):
            raise LeaseLost(conv)

    try:
        while not stop.is_set():
            if leases.acquire(0):
                try:
                    report = lifecycle.purge_expired(default_days, progress=keep_lease)
                    compacted = (f", search index compacted ({report.compaction_steps} merge steps)"
                                 if report.compaction_steps else "")
                    log.info("retention pass: %d conversations, %d entries purged (default %s)%s",
                             report.conversations, report.purged,
                             f"{default_days} days" if default_days else "forever", compacted)
                except LeaseLost as lost:
                    log.warning("retention: lease lost or stopping after %s; the next pass continues", lost)
                finally:
                    leases.release(0)
            else:
                log.info("retention: another process holds %s; skipping this pass", LEASE_KEY)
            if once:
                break
            stop.wait(settings.retention_interval_s)
    finally:
        client.close()
        media.close()
        store.close()
