"""What the hooks answer to a control message (``Hooks.control``)."""

from __future__ import annotations

import enum

CONTROL_TOPICS = "$CONTROL/"  # a client publish under this prefix goes to Hooks.control first


class Control(enum.Enum):
    NOT_MINE = "not_mine"  # not a control topic of these hooks: the broker goes on as for any publish
    HANDLED = "handled"  # taken: acknowledged, never routed
    REFUSED = "refused"  # could not be taken: the connection is closed without an acknowledgement
