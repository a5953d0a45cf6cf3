"""Give a user's password to Mosquitto at the one moment chatmq sees it in plain text.

chatmq stores argon2id hashes and Mosquitto stores its own PBKDF2 hashes; neither converts into
the other, and Mosquitto cannot check chatmq's signed tokens. So the sync cannot copy passwords:
``chatmq user add`` and ``chatmq user passwd`` call ``push_password`` when a Mosquitto is
configured. A user whose password was set before that has no Mosquitto password until it is set
again (docs/brokers.md).
"""

from __future__ import annotations

from chatmq.adapters.mosquitto.control import DynsecClient, DynsecError
from chatmq.adapters.mosquitto.roles import MANAGED, user_role


def push_password(url: str, user: str, password: str) -> None:
    """Set ``user``'s Mosquitto password, creating its client if the sync has not yet done so.
    Raises DynsecError or ConnectionError when Mosquitto refuses or cannot be reached."""
    with DynsecClient(url) as client:
        answer = client.run([{"command": "setClientPassword", "username": user, "password": password}])[0]
        if not answer.get("error"):
            return
        # Not there yet: create it; the sync adds its role (if the role exists now, so do we).
        create = {"command": "createClient", "username": user, "password": password, "textname": MANAGED}
        answer = client.run([create])[0]
        if answer.get("error") == "Client already exists":  # the sync created it meanwhile
            client.call("setClientPassword", username=user, password=password)
        elif answer.get("error"):
            raise DynsecError("createClient", str(answer["error"]))
        client.run([{"command": "addClientRole", "username": user, "rolename": user_role(user)}])
