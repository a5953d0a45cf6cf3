"""How services tell each other they are alive, through Redis (used by the API's /healthz)."""

from __future__ import annotations

BRIDGE_ALIVE_KEY = "chatmq:bridge:alive"  # set by every bridge each second with a short TTL
BRIDGE_ALIVE_INTERVAL_S = 1.0
BRIDGE_ALIVE_TTL_MS = 5000
