"""The coordinator's registry: enrolled devices, miners, broker credentials and access rules.

Renders Mosquitto's password file (PBKDF2-SHA512 `$7$` hashes, as mosquitto_passwd writes them)
and ACL file, so that a device may write only its own update topic and read blocks, and only
miners may publish blocks, gossip and sync answers. Plain passwords go only into the node's own
broker.json (mode 0600); the registry keeps hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path

from edge_sdk.files import write_atomic, write_private
from edge_sdk.protocol.identity import node_id
from edge_sdk.transport.topics import ANY, Topics

ITERATIONS = 101
ROLES = ("miner", "device", "coordinator", "observer", "bridge")
REGIONAL = "regional"  # broker_dir/regional/: passwd and acl of a regional broker (devices only)


def password_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class Registry:
    """registry.json in the task directory: {"nodes": {id: {"role", "sign_pk", "hash", ...}}}."""

    def __init__(self, task_dir: str | Path, task_id: bytes):
        self.path = Path(task_dir) / "registry.json"
        self.topics = Topics(task_id)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"nodes": {}}

    def save(self) -> None:
        write_private(self.path, json.dumps(self.data, indent=2))

    def add(self, role: str, sign_pk: bytes, username: str | None = None, **extra) -> tuple[str, str]:
        """Register a node with fresh broker credentials; returns (username, password). A bridge is
        registered under a `username` of its own; registering it again replaces its password."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if (role == "bridge") != (username is not None):
            raise ValueError("a bridge, and only a bridge, is registered under a username of its own")
        name = username or (node_id(sign_pk) if role != "observer" else "observer-" + secrets.token_hex(4))
        password = secrets.token_urlsafe(24)
        self.data["nodes"][name] = {
            "role": role,
            "sign_pk": sign_pk.hex(),
            "hash": password_hash(password),
            "revoked": False,
            **extra,
        }
        return name, password

    def revoke(self, name: str) -> dict:
        node = self.data["nodes"].get(name)
        if node is None or node["role"] != "device":
            raise KeyError(f"no enrolled device {name}")
        node["revoked"] = True
        return node

    def revoked_keys(self) -> list[bytes]:
        return [bytes.fromhex(n["sign_pk"]) for n in self.data["nodes"].values() if n["revoked"]]

    def _nodes(self, roles: tuple[str, ...]) -> list[tuple[str, dict]]:
        return [(k, n) for k, n in sorted(self.data["nodes"].items()) if not n["revoked"] and n["role"] in roles]

    def passwd(self, roles: tuple[str, ...] = ROLES) -> str:
        return "".join(f"{name}:{n['hash']}\n" for name, n in self._nodes(roles))

    def rules(self, role: str, me: str) -> list[str]:
        """ACL lines (`topic read|write PATTERN`) of a node of `role` named `me`; every pattern comes
        from `Topics`. With `me` = ANY, a device's lines are what a bridge carries (bridge.py)."""
        t = self.topics
        if role == "bridge":  # what the devices it carries may do together, each device by name
            return list(dict.fromkeys(line for d, _ in self._nodes(("device",)) for line in self.rules("device", d)))
        rules = {
            "miner": lambda me: [
                f"topic read {t.update(me, ANY)}",
                f"topic read {t.gossip(me, ANY)}",
                f"topic write {t.gossip(ANY, me)}",
                f"topic write {t.block(me)}",
                f"topic write {t.light(me)}",
                f"topic write {t.alert(me)}",
                f"topic write {t.head(me)}",
                f"topic write {t.partial(me)}",
                f"topic read {t.sync(me)}",
                f"topic write {t.sync(ANY)}",
                f"topic write {t.reply(ANY)}",
                f"topic read {t.reply(me)}",
            ],
            "device": lambda me: [
                f"topic write {t.update(ANY, me)}",
                f"topic write {t.sync(ANY)}",
                f"topic read {t.reply(me)}",
                f"topic read {t.light(ANY)}",
                f"topic read {t.alert(ANY)}",
                f"topic write {t.alert(me)}",
            ],
            "coordinator": lambda me: [
                f"topic write {t.genesis}",
                f"topic write {t.revocations}",
                f"topic read {t.everything}",
            ],
            "observer": lambda me: [f"topic read {t.everything}"],
        }

        def common(me: str) -> list[str]:
            return [
                f"topic read {t.block(ANY)}",
                f"topic read {t.head(ANY)}",
                f"topic read {t.partial(ANY)}",
                f"topic write {t.presence(me)}",
                f"topic read {t.presence(ANY)}",
                f"topic read {t.genesis}",
                f"topic read {t.revocations}",
            ]

        return [*rules[role](me), *common(me)]

    def acl(self, roles: tuple[str, ...] = ROLES) -> str:
        """Who may publish and read where, for the nodes of `roles`. A bridge's lines name each device,
        so a regional broker cannot write as a miner, nor read a miner's replies, updates or gossip."""
        out = ["# generated by blockfl from registry.json; do not edit"]
        for name, node in self._nodes(roles):
            out += ["", f"user {name}", *self.rules(node["role"], name)]
        return "\n".join(out) + "\n"

    def render(self, broker_dir: str | Path) -> None:
        """Write passwd and acl for the core Mosquitto, and in broker_dir/regional/ for regional ones
        (devices only; see bridge.py). Reload the brokers afterwards: SIGHUP or `systemctl reload mosquitto`."""
        broker_dir = Path(broker_dir)
        for directory, roles in ((broker_dir, ROLES), (broker_dir / REGIONAL, ("device",))):
            directory.mkdir(parents=True, exist_ok=True)
            write_private(directory / "passwd", self.passwd(roles))
            write_atomic(directory / "acl", self.acl(roles))
