"""The live objects the plugins share, and the task that keeps the membership view fresh.

amqtt builds each plugin from its dotted class path and a ``Config`` dataclass filled from the
broker config, so the server hands these objects to the plugins through that Config: no module
globals, and two brokers in one process (tests, embedded runs) never see each other's state.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from chatcore.access import Identity
from chatcore.auth import Authenticator
from chatcore.membership import MembershipView

log = logging.getLogger(__name__)

# Where the auth plugin leaves the authenticated Identity for the access-control plugin.
IDENTITY_KEY = "chatmq.identity"


@dataclass(frozen=True, slots=True)
class BrokerServices:
    authenticator: Authenticator
    membership: MembershipView


def session_identity(attributes: dict[str, Any]) -> Identity | None:
    identity = attributes.get(IDENTITY_KEY)
    return identity if isinstance(identity, Identity) else None


async def keep_membership_fresh(view: MembershipView, interval_s: float) -> None:
    """Poll the store so a membership change by any process reaches access checks without restart.

    A failing store keeps the last good view (access checks go on) and is logged once per outage.
    """
    failing = False
    while True:
        try:
            await asyncio.to_thread(view.refresh)
        except Exception:
            if not failing:
                log.exception("membership refresh failed; access checks keep the previous view")
            failing = True
        else:
            if failing:
                log.info("membership refresh recovered")
            failing = False
        await asyncio.sleep(interval_s)
