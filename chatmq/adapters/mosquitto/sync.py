"""Keep Mosquitto's dynamic security in step with chatmq's users and memberships.

A full sync reads Mosquitto's clients and roles and sends the difference; after that the sync
polls the store (``membership_version()`` and ``users_version()``, two cheap reads) and, when one
moved, sends only what changed since the last state it applied. Memberships come from a
``MembershipView`` (it follows the store's change log), the user list is read again only when the
users version moved. Any refused
command, or a reconnect to Mosquitto, makes the next round a full sync again, so the two can
never drift apart for longer than one poll interval.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from chatmq.adapters.mosquitto.control import DynsecClient, DynsecError
from chatmq.adapters.mosquitto.roles import (
    DEFAULT_ACL_ACCESS,
    MANAGED,
    ROLE_PREFIX,
    Acl,
    ClientSpec,
    State,
    desired_state,
)
from chatmq.core.config import SERVICE_USER
from chatmq.core.membership import MembershipView
from chatmq.core.store.base import Store, User

log = logging.getLogger(__name__)


def read_state(client: DynsecClient, wanted: set[str]) -> State:
    """Mosquitto's state, limited to what chatmq owns or wants: clients it made or names, roles
    with its prefix. Anything else (the admin client, an operator's own roles) is left alone."""
    clients_data = client.call("listClients", verbose=True)["clients"]
    roles_data = client.call("listRoles", verbose=True)["roles"]
    clients = {
        c["username"]: ClientSpec(bool(c.get("disabled")),
                                  frozenset(r["rolename"] for r in c.get("roles", ())))
        for c in clients_data
        if c.get("textname") == MANAGED or c["username"] in wanted
    }
    roles = {
        r["rolename"]: frozenset(Acl(a["acltype"], a["topic"]) for a in r.get("acls", ()) if a.get("allow"))
        for r in roles_data
        if r["rolename"].startswith(ROLE_PREFIX)
    }
    return State(clients, roles)


def _acl(acl: Acl) -> dict[str, Any]:
    return {"acltype": acl.acltype, "topic": acl.topic, "priority": 0, "allow": True}


def diff(have: State, want: State) -> list[dict[str, Any]]:
    """Commands turning ``have`` into ``want``: roles first (clients refer to them), role
    deletions last."""
    commands: list[dict[str, Any]] = []
    for role, acls in sorted(want.roles.items()):
        old = have.roles.get(role)
        if old is None:
            commands.append({"command": "createRole", "rolename": role, "textname": MANAGED,
                             "acls": [_acl(a) for a in sorted(acls)]})
            continue
        commands += [{"command": "removeRoleACL", "rolename": role, "acltype": a.acltype, "topic": a.topic}
                     for a in sorted(old - acls)]
        commands += [{"command": "addRoleACL", "rolename": role, **_acl(a)} for a in sorted(acls - old)]
    for user, spec in sorted(want.clients.items()):
        old_spec = have.clients.get(user)
        if old_spec is None:
            commands.append({"command": "createClient", "username": user, "textname": MANAGED,
                             "roles": [{"rolename": r} for r in sorted(spec.roles)]})
            old_spec = ClientSpec(False, spec.roles)
        commands += [{"command": "removeClientRole", "username": user, "rolename": r}
                     for r in sorted(old_spec.roles - spec.roles)]
        commands += [{"command": "addClientRole", "username": user, "rolename": r}
                     for r in sorted(spec.roles - old_spec.roles)]
        if spec.disabled != old_spec.disabled:
            commands.append({"command": "disableClient" if spec.disabled else "enableClient", "username": user})
    commands += [{"command": "deleteClient", "username": user}
                 for user in sorted(set(have.clients) - set(want.clients))]
    commands += [{"command": "deleteRole", "rolename": role} for role in sorted(set(have.roles) - set(want.roles))]
    return commands


class MosquittoSync:
    """One sync loop. Blocking; ``run()`` until ``stop`` is set."""

    def __init__(self, store: Store, client: DynsecClient, service_password: str, interval_s: float = 0.5) -> None:
        self._store = store
        self._client = client
        self._service_password = service_password
        self._interval_s = interval_s
        self._applied: State | None = None  # what Mosquitto holds, as far as we know; None = unknown
        self._seen: tuple[int, int] | None = None  # (membership version, users version) applied
        self._members = MembershipView(store)
        self._users: list[User] = []
        self._users_version: int | None = None
        self._generation = -1  # the control connection's generation our knowledge belongs to
        self._password_set = False
        self._lock = threading.Lock()  # one round at a time, whoever calls

    def full_sync(self) -> int:
        """Read Mosquitto's state, send the whole difference; returns the number of commands sent."""
        with self._lock:
            self._applied = None
            return self._poll()

    def poll(self) -> int:
        """Sync if the store changed since the last round (or Mosquitto's state is unknown)."""
        with self._lock:
            return self._poll()

    def _poll(self) -> int:
        seen = (self._store.membership_version(), self._store.users_version())
        if not self._client.connected:
            raise ConnectionError("not connected to Mosquitto")
        generation = self._client.generation  # a new connection: Mosquitto may have restarted
        full = self._applied is None or generation != self._generation
        if seen == self._seen and not full:
            return 0
        if seen[1] != self._users_version:  # read after the versions: at least as new as ``seen``
            self._users, self._users_version = self._store.list_users(), seen[1]
        users = self._users
        self._members.refresh()
        want = desired_state(users, self._members.snapshot())
        if full:
            self._client.call("setDefaultACLAccess", acls=DEFAULT_ACL_ACCESS)
            have = read_state(self._client, set(want.clients))
        else:
            have = self._applied
        commands = diff(have, want)
        if not self._password_set or SERVICE_USER not in have.clients:
            # Mosquitto never shows a password, so it is set once per process, not every round
            # (a connected bridge may be logged out once; it reconnects to its persistent session).
            commands.append({"command": "setClientPassword", "username": SERVICE_USER,
                             "password": self._service_password})
        refused = [(c["command"], a["error"]) for c, a in zip(commands, self._client.run(commands), strict=True)
                   if a.get("error")]
        if refused:
            self._applied = None  # read Mosquitto's state again next round
            raise DynsecError(refused[0][0], f"{refused[0][1]} ({len(refused)} of {len(commands)} refused)")
        self._applied, self._seen, self._generation, self._password_set = want, seen, generation, True
        if commands:
            log.info("mosquitto %s sync: %d commands for %d users",
                     "full" if full else "incremental", len(commands), len(users))
        return len(commands)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll()
            except (DynsecError, ConnectionError, OSError) as exc:
                log.warning("mosquitto sync failed, retrying with a full sync: %s", exc)
                self._applied = None
            stop.wait(self._interval_s)
