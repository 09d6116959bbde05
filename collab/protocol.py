"""y-websocket framing. Pure: no I/O, no Django.

A frame is `varuint type` followed by a type-specific body:
0 sync (varuint subtype: 0 step1 + state vector, 1 step2 + update, 2 update), 1 awareness
(varUint8Array of an awareness update), 2 auth (varuint 0 = permission denied, varString
reason), 3 query awareness (no body). Types 100-102 and 111 are this server's extensions,
sent only to clients that ask for them; 110 is the one extension a client may send
(see docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    SAVED = 100
    SESSION = 101
    KERNEL = 102
    COMMAND = 110  # client -> server: varString JSON {"id", "op", "args"} (ext clients only)
    COMMAND_REPLY = 111  # server -> client: varString JSON {"id", "status", "body"}


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class ProtocolError(ValueError):
    """A frame that does not follow the protocol."""


EMPTY_UPDATE = b"\x00\x00"  # no structs, empty delete set


def write_var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def write_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def write_string(text: str) -> bytes:
    return write_bytes(text.encode())


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def var_uint(self) -> int:
        n = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise ProtocolError("frame ends inside a number")
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return n
            shift += 7
            if shift > 63:
                raise ProtocolError("number too long")

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self.pos + length
        if end > len(self.data):
            raise ProtocolError("frame shorter than its declared length")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode()
        except UnicodeDecodeError:
            raise ProtocolError("string is not UTF-8") from None

    def done(self) -> bool:
        return self.pos >= len(self.data)


@dataclass(frozen=True)
class Message:
    type: MessageType
    sync_type: SyncType | None = None
    payload: bytes = b""


def parse(frame: bytes) -> Message:
    """Parse one client frame; raise ProtocolError if it is malformed."""
    reader = Reader(frame)
    try:
        kind = MessageType(reader.var_uint())
    except ValueError:
        raise ProtocolError("unknown message type") from None
    if kind is MessageType.SYNC:
        try:
            sub = SyncType(reader.var_uint())
        except ValueError:
            raise ProtocolError("unknown sync message type") from None
        return Message(kind, sub, reader.var_bytes())
    if kind is MessageType.AWARENESS:
        return Message(kind, None, reader.var_bytes())
    if kind is MessageType.QUERY_AWARENESS:
        return Message(kind)
    if kind is MessageType.COMMAND:
        return Message(kind, None, reader.var_bytes())
    raise ProtocolError(f"clients may not send message type {int(kind)}")


def sync_step1(state_vector: bytes) -> bytes:
    return bytes([MessageType.SYNC, SyncType.STEP1]) + write_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes([MessageType.SYNC, SyncType.STEP2]) + write_bytes(update)


def sync_update(update: bytes) -> bytes:
    return bytes([MessageType.SYNC, SyncType.UPDATE]) + write_bytes(update)


def awareness(update: bytes) -> bytes:
    return bytes([MessageType.AWARENESS]) + write_bytes(update)


def permission_denied(reason: str) -> bytes:
    return bytes([MessageType.AUTH, 0]) + write_string(reason)


def saved(state_vector: bytes) -> bytes:
    return bytes([MessageType.SAVED]) + write_bytes(state_vector)


def session(info: dict) -> bytes:
    return bytes([MessageType.SESSION]) + write_string(json.dumps(info))


def kernel(info: dict) -> bytes:
    return bytes([MessageType.KERNEL]) + write_string(json.dumps(info))


def command_reply(request_id, status: int, body: dict) -> bytes:
    reply = {"id": request_id, "status": status, "body": body}
    return bytes([MessageType.COMMAND_REPLY]) + write_string(json.dumps(reply))


def command(request_id, op: str, args: dict) -> bytes:
    """A client's command frame (used by tests and benchmarks)."""
    return bytes([MessageType.COMMAND]) + write_string(json.dumps({"id": request_id, "op": op, "args": args}))


# Awareness updates: varuint count, then per client: varuint id, varuint clock, varString JSON.

AwarenessEntry = tuple[int, int, str]  # client id, clock, JSON state ("null" = gone)

MAX_NUMBER = 2**53 - 1  # what a browser's lib0 decoder reads (Yjs ids are 32-bit, Yrs ids 53)


def parse_awareness(update: bytes) -> list[AwarenessEntry]:
    """The entries of an awareness update; numbers a browser could not decode are refused
    (relayed, one such entry would break every receiver's whole message)."""
    reader = Reader(update)
    entries = [(reader.var_uint(), reader.var_uint(), reader.var_string()) for _ in range(reader.var_uint())]
    if not reader.done():
        raise ProtocolError("trailing bytes after awareness entries")
    for client, clock, _ in entries:
        if client > MAX_NUMBER:
            raise ProtocolError("awareness client id is larger than 2^53-1")
        if clock > MAX_NUMBER:
            raise ProtocolError("awareness clock is larger than 2^53-1")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    out = bytearray(write_var_uint(len(entries)))
    for client, clock, state in entries:
        out += write_var_uint(client) + write_var_uint(clock) + write_string(state)
    return bytes(out)


def parse_state_vector(sv: bytes) -> dict[int, int]:
    reader = Reader(sv)
    return {reader.var_uint(): reader.var_uint() for _ in range(reader.var_uint())}
