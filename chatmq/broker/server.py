"""Run the broker until SIGINT or SIGTERM, and always shut amqtt down cleanly.

Stock amqtt only handles SIGINT; a container or supervisor stops processes with SIGTERM, so both
signals end ``serve`` the same way: ``broker.shutdown()``, then the store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chatmq.broker.chatbroker import BrokerLimits, build_broker
from chatmq.broker.config import build_config
from chatmq.broker.health import start_ops_server
from chatmq.broker.hooks import ChatHooks, Hooks
from chatmq.broker.services import BrokerServices, MembershipRefresher, RedisListener, keep_membership_fresh
from chatmq.broker.session_store import SessionStore
from chatmq.core import redisconn
from chatmq.core.auth import Authenticator
from chatmq.core.config import Settings
from chatmq.core.credcache import VerifiedPasswords
from chatmq.core.identity import external_tokens
from chatmq.core.membership import MembershipView
from chatmq.core.membershipsync import CHANGED_CHANNEL, AppliedVersions
from chatmq.core.ratelimit import ConnectionRate, LoginThrottle
from chatmq.core.revocation import TokenRevocations
from chatmq.core.store import open_store

if TYPE_CHECKING:
    from amqtt.broker import Broker

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


BrokerFactory = Callable[[dict[str, Any], asyncio.AbstractEventLoop, Settings, Hooks], "Broker"]


def verified_passwords(settings: Settings) -> VerifiedPasswords | None:
    return VerifiedPasswords(settings.password_cache_s) if settings.password_cache_s > 0 else None


def chat_broker(config: dict[str, Any], loop: asyncio.AbstractEventLoop, settings: Settings, hooks: Hooks) -> Broker:
    limits = BrokerLimits(settings.max_packet_bytes, settings.session_queue_limit, settings.session_queue_bytes,
                          settings.service_queue_bytes, settings.typing_per_s, settings.typing_burst,
                          settings.sessions_per_user)
    sessions = SessionStore(settings.redis_url, settings.session_expiry_s)
    return build_broker(config, hooks=hooks, limits=limits, sessions=sessions,
                        ws_permessage_deflate=settings.ws_permessage_deflate, loop=loop)


async def serve(
    settings: Settings, *, ready: asyncio.Event | None = None, broker_factory: BrokerFactory = chat_broker
) -> None:
    """Serve until SIGINT/SIGTERM (when run in the main thread) or until cancelled.

    ``ready`` is set once both listeners accept connections. ``broker_factory`` lets the
    regression tests run stock amqtt with the same hooks (as amqtt plugins) side by side with ours.
    """
    loop = asyncio.get_running_loop()
    store = await asyncio.to_thread(open_store, settings.resolved_store_url)
    try:
        secret = await asyncio.to_thread(settings.load_secret)
        view = MembershipView(store)
        await asyncio.to_thread(view.refresh)  # access checks must not start from an empty view
        revocations = TokenRevocations(redisconn.connect(settings.redis_url), settings.token_ttl_s)
        services = BrokerServices(
            Authenticator(store, secret, revocations, verified_passwords(settings), external_tokens(settings)),
            view, MembershipRefresher(view),
            allow_anonymous=settings.allow_anonymous,
            throttle=LoginThrottle(redisconn.connect(settings.redis_url), settings.login_failures_per_user,
                                   settings.login_failures_per_address, settings.login_window_s),
            connections=ConnectionRate(redisconn.connect(settings.redis_url), settings.connections_per_address,
                                       settings.login_window_s),
            applied=AppliedVersions(redisconn.connect(settings.redis_url)),
            name=f"{socket.gethostname()}:{os.getpid()}:{settings.mqtt_port}",
        )
        refresher = asyncio.create_task(
            keep_membership_fresh(services.refresher, settings.membership_refresh_s, services.report_membership)
        )
        follower = RedisListener(settings.redis_url, {CHANGED_CHANNEL: _follow(services)}, "membership-changes")
        follower.start(loop)
        hooks = ChatHooks(services, settings.redis_url)
        try:
            broker = broker_factory(build_config(settings), loop, settings, hooks)
            await broker.start()
            ops = start_ops_server(settings, store)
            try:
                await _run_until_stopped(loop, settings, ready)
            finally:
                if ops is not None:
                    ops.stop()
                await broker.shutdown()
                log.info("broker stopped")
        finally:
            await hooks.stop()
            follower.stop()
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if services.applied is not None:  # the API stops waiting for this broker at once
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(services.applied.forget, services.name)
    finally:
        await asyncio.to_thread(store.close)


async def _run_until_stopped(loop: asyncio.AbstractEventLoop, settings: Settings, ready: asyncio.Event | None) -> None:
    stop = asyncio.Event()
    handled = threading.current_thread() is threading.main_thread()
    if handled:  # signal handlers can only be installed from the main thread
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, _on_signal, sig, stop)
    try:
        secure = "".join(f" {name}={settings.host}:{port}" for name, port in
                         (("mqtts", settings.mqtt_tls_port), ("wss", settings.ws_tls_port)) if port)
        log.info("broker listening mqtt=%s:%d ws=%s:%d%s", settings.host, settings.mqtt_port, settings.host,
                 settings.ws_port, secure)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        if handled:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)


def _follow(services: BrokerServices) -> Callable[[str], None]:
    """A membership change announced on Redis (by the API): catch up and report at once."""
    pending: set[asyncio.Task[bool]] = set()

    def changed(raw: str) -> None:
        try:
            version = int(raw)
        except ValueError:
            return
        task = asyncio.ensure_future(services.reach_membership(version))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return changed


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("received %s, shutting down", sig.name)
    stop.set()


def run(settings: Settings) -> None:
    """Blocking entry point: uvloop when installed (faster relaying), else the stock loop."""
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))
