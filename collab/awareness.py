"""Presence state of one room. Runs in the event loop; pure bookkeeping, no I/O.

Rules: a socket speaks only for the one Yjs client id it first claimed, and may claim only an id
that no other socket (of this worker, or of another one whose state is fresh) holds, and that no
other person's socket released on any worker within `OUTDATED` seconds (a browser keeps its
client id when its socket reconnects, maybe to another worker: the id waits for it); the server
overwrites the `user` field with the socket's verified identity; states not renewed within `OUTDATED` seconds
are not handed to joiners (clients renew every 15 s, like y-protocols).
"""

from __future__ import annotations

import json
import time

from collab.protocol import AwarenessEntry, ProtocolError, encode_awareness, parse_awareness

OUTDATED = 30.0


class Presence:
    def __init__(self) -> None:
        self.states: dict[int, tuple[int, str, float]] = {}  # client -> (clock, json, seen)
        self.owners: dict[int, object] = {}  # client -> the local socket that claimed it
        self.reserved: dict[int, tuple[object, float]] = {}  # released client -> (person, until)

    def claim(self, payload: bytes, owner: object, person: object) -> int | None:
        """The client id a socket's first awareness update speaks for, if it is free: not
        claimed by another local socket, not fresh in another worker's states, and not waiting
        for another person's socket to come back."""
        entries = parse_awareness(payload)
        if not entries:
            return None
        client = entries[0][0]
        holder = self.owners.get(client)
        if holder is not None and holder is not owner:
            return None
        now = time.monotonic()
        fresh_elsewhere = client in self.states and now - self.states[client][2] < OUTDATED
        if holder is None and fresh_elsewhere:
            return None
        waiting_for, until = self.reserved.get(client, (person, now))
        if waiting_for != person and now < until:
            return None
        self.reserved.pop(client, None)
        self.owners[client] = owner
        return client

    def release(self, client_id: int, owner: object, person: object) -> None:
        if self.owners.get(client_id) is owner:
            del self.owners[client_id]
            self.reserve(client_id, person)

    def person_of(self, client_id: int) -> object | None:
        """The person whose presence speaks for a client id: the verified identity stamped into
        its fresh state (by this worker or another), or the person a released id is kept for."""
        state = self.states.get(client_id)
        if state is not None and time.monotonic() - state[2] < OUTDATED:
            try:
                person = json.loads(state[1]).get("user", {}).get("id")
            except (ValueError, AttributeError, RecursionError):
                person = None
            if person is not None:
                return person
        return self.waiting_for(client_id)

    def waiting_for(self, client_id: int) -> object | None:
        """The person a released id is kept for, if any."""
        person, until = self.reserved.get(client_id, (None, 0.0))
        return person if until > time.monotonic() else None

    def reserve(self, client_id: int, person: object) -> None:
        """Keep a released id for its person for `OUTDATED` seconds: on this worker when its
        socket here closed, and on the others when they hear of it (`Room.remove`), since the
        browser's next socket may reach any worker."""
        if client_id in self.owners:
            return
        now = time.monotonic()
        self.reserved = {c: r for c, r in self.reserved.items() if r[1] > now}
        self.reserved[client_id] = (person, now + OUTDATED)

    def stamp(self, payload: bytes, client_id: int | None, identity: dict) -> tuple[int | None, bytes]:
        """Check and stamp a socket's awareness update; return (its client id, update to relay)."""
        entries = parse_awareness(payload)
        out: list[AwarenessEntry] = []
        for client, clock, state in entries:
            if client_id is None:
                client_id = client
            if client != client_id:
                continue  # a socket cannot speak for another client
            if state != "null":
                state = _stamped(state, identity)
            out.append((client, clock, state))
        self.apply(out)
        return client_id, encode_awareness(out) if out else b""

    def apply(self, entries: list[AwarenessEntry]) -> None:
        now = time.monotonic()
        for client, clock, state in entries:
            if state == "null":
                self.states.pop(client, None)
            else:
                self.states[client] = (clock, state, now)

    def apply_remote(self, payload: bytes) -> None:
        self.apply(parse_awareness(payload))

    def remove(self, client_id: int) -> bytes:
        """The update announcing that a client left ("null" state, next clock)."""
        clock = self.states.pop(client_id, (0, "", 0))[0]
        return encode_awareness([(client_id, clock + 1, "null")])

    def restamp(self, client_id: int, identity: dict) -> bytes | None:
        """Re-stamp a client's state after its role changed."""
        if client_id not in self.states:
            return None
        clock, state, _ = self.states[client_id]
        obj = json.loads(state)
        obj["user"] = identity
        entry = (client_id, clock + 1, json.dumps(obj, separators=(",", ":")))
        self.apply([entry])
        return encode_awareness([entry])

    def full(self) -> bytes | None:
        now = time.monotonic()
        entries = [(c, clock, s) for c, (clock, s, seen) in self.states.items() if now - seen < OUTDATED]
        return encode_awareness(entries) if entries else None

    def users(self) -> list[dict]:
        return [json.loads(s).get("user", {}) for _, s, _ in self.states.values()]


def _refuse_constant(name: str) -> None:
    raise ProtocolError(f"awareness state is not JSON a browser can read ({name})")


def _stamped(state: str, identity: dict) -> str:
    """A client's JSON state with the socket's verified identity as its `user`. NaN, Infinity
    and numbers too large for a double are refused: browsers' JSON.parse rejects them."""
    try:
        obj = json.loads(state, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ProtocolError("awareness state is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("awareness state is not an object")
    obj["user"] = identity
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ProtocolError("awareness state is not JSON a browser can read (number out of range)") from None
