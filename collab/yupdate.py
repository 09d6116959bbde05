"""What the room reads from Yjs updates (v1 encoding) beyond what pycrdt offers: whether a
document could take one in whole, before (`waits`) or after (`left_out`) applying it."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from pycrdt import get_state, get_update

from collab import protocol

EMPTY_STATE = b"\x00"  # a state vector naming no writer


def state_vector(state: bytes) -> dict[int, int]:
    """Client id -> the clock of its next item, from an encoded state vector."""
    return protocol.parse_state_vector(state)


def as_read(update: bytes) -> bytes:
    """The update as pycrdt reads it, encoded again: what the room applies, saves and relays.
    pycrdt reads clocks and lengths as 32-bit numbers and Yjs (in browsers) as 53-bit ones: a
    client's deletion of 2^32 items from clock 0 is a deletion of nothing to the room, and to
    every browser a deletion of all that writer's items, and of those to come. Raises
    ValueError for what pycrdt cannot read."""
    return get_update(update, EMPTY_STATE)


# Updates at most this large are read struct by struct before they are applied (`waits`); a
# larger one (a paste of many cells) is checked after, as every update is (`left_out`).
CHECK_BEFORE_MAX_BYTES = 32 * 1024
_ANY_DEPTH_MAX = 256
# pycrdt counts clocks in 32 bits and takes some differences of them as signed 32-bit numbers: an
# item reaching past this wraps its writer's clock (the next transaction panics). No editor
# writes two billion items.
_CLOCK_MAX = 2**31 - 1


class Unreadable(ValueError):
    """The update is not a Yjs v1 update this module can read."""


@dataclass
class _Struct:
    clock: int
    length: int
    counts: bool  # it brings content (an item or a GC range; a skip brings nothing)
    needs: list[tuple[int, int]]  # ids it builds on: origin, right origin, parent


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def uint8(self) -> int:
        if self.pos >= len(self.data):
            raise Unreadable("the update ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def var_uint(self) -> int:
        value = shift = 0
        while True:
            byte = self.uint8()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise Unreadable("a number is too long")

    def skip(self, count: int) -> None:
        if self.pos + count > len(self.data):
            raise Unreadable("the update ends early")
        self.pos += count

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        start = self.pos
        self.skip(length)
        return self.data[start : self.pos]

    def var_int(self) -> None:
        byte = self.uint8()
        while byte & 0x80:
            byte = self.uint8()

    def any(self, depth: int = 0) -> None:
        """lib0's `readAny`, read past."""
        if depth > _ANY_DEPTH_MAX:
            raise Unreadable("a value is nested too deep")
        tag = self.uint8()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:
            self.var_int()
        elif tag == 124:
            self.skip(4)
        elif tag in (123, 122):
            self.skip(8)
        elif tag in (119, 116):  # string, bytes
            self.var_bytes()
        elif tag == 118:  # object
            for _ in range(self.var_uint()):
                self.var_bytes()
                self.any(depth + 1)
        elif tag == 117:  # array
            for _ in range(self.var_uint()):
                self.any(depth + 1)
        else:
            raise Unreadable(f"unknown value tag {tag}")


def _content_length(reader: _Reader, kind: int) -> int:
    """Read an item's content past; its length in clock ticks (Yjs counts a string in UTF-16
    code units)."""
    if kind == 1:  # deleted
        return reader.var_uint()
    if kind == 2:  # JSON
        count = reader.var_uint()
        for _ in range(count):
            reader.var_bytes()
        return count
    if kind == 4:  # string
        text = reader.var_bytes().decode("utf-8", "surrogatepass")
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    if kind in (3, 5):  # binary, embed
        reader.var_bytes()
        return 1
    if kind == 6:  # format: key, value
        reader.var_bytes()
        reader.var_bytes()
        return 1
    if kind == 7:  # a shared type
        ref = reader.var_uint()
        if ref in (3, 5):  # XML element, XML hook: a name
            reader.var_bytes()
        elif ref not in (0, 1, 2, 4, 6):  # array, map, text, XML fragment, XML text
            raise Unreadable(f"unknown type {ref}")
        return 1
    if kind == 8:  # any
        count = reader.var_uint()
        for _ in range(count):
            reader.any()
        return count
    raise Unreadable(f"unknown content kind {kind}")


def _read(update: bytes) -> tuple[dict[int, list[_Struct]], dict[int, list[tuple[int, int]]]]:
    """The update's structs per writer, in order, and its delete set."""
    reader = _Reader(update)
    writers: dict[int, list[_Struct]] = {}
    for _ in range(reader.var_uint()):
        count = reader.var_uint()
        client = reader.var_uint()
        clock = reader.var_uint()
        structs = writers.setdefault(client, [])
        for _ in range(count):
            info = reader.uint8()
            kind = info & 0x1F
            if kind in (0, 10):  # GC, skip
                length = reader.var_uint()
                structs.append(_Struct(clock, length, kind == 0, []))
                clock += length
                continue
            needs = []
            if info & 0x80:  # origin
                needs.append((reader.var_uint(), reader.var_uint()))
            if info & 0x40:  # right origin
                needs.append((reader.var_uint(), reader.var_uint()))
            if not info & 0xC0:  # the parent is written out
                if reader.var_uint() == 1:
                    reader.var_bytes()  # a root type's name
                else:
                    needs.append((reader.var_uint(), reader.var_uint()))
                if info & 0x20:
                    reader.var_bytes()  # the key in a map
            length = _content_length(reader, kind)
            structs.append(_Struct(clock, length, True, needs))
            clock += length
        if clock > _CLOCK_MAX:
            raise Unreadable("a clock is out of range")
    return writers, _delete_set(reader)


def _delete_set(reader: _Reader, most: int | None = None) -> dict[int, list[tuple[int, int]]]:
    """An update's delete set, read from where its structs end: client id -> (clock, length).
    Read byte by byte in one loop (a method call per number took 1 us a range: 100,000 ranges
    are 0.4 MB). `most`: raises TooManyRanges once it holds more ranges than that."""
    data, end = reader.data, len(reader.data)
    pos = reader.pos

    def var_uint() -> int:
        nonlocal pos
        if pos >= end:
            raise Unreadable("the update ends early")
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            return byte
        value, shift = byte & 0x7F, 7
        while True:
            if pos >= end:
                raise Unreadable("the update ends early")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise Unreadable("a number is too long")

    deletes: dict[int, list[tuple[int, int]]] = {}
    total = 0
    for _ in range(var_uint()):
        client = var_uint()
        count = var_uint()
        total += count
        if most is not None and total > most:
            raise TooManyRanges(total)
        ranges = deletes.setdefault(client, [])
        for _ in range(count):
            ranges.append((var_uint(), var_uint()))
    reader.pos = pos
    return deletes


class TooManyRanges(ValueError):
    """An update's delete set holds more ranges than the reader was to read."""


def delete_set_of(update: bytes, most: int | None = None) -> dict[int, list[tuple[int, int]]]:
    """The update's delete set, found by pycrdt (its diff against the update's own state vector
    is that delete set alone, unless the update has holes), read up to `most` ranges (raises
    TooManyRanges past them): cheap before anything else is read of the update. Raises
    Unreadable."""
    try:
        rest = get_update(update, get_state(update))
    except ValueError:
        raise Unreadable("pycrdt cannot read it") from None
    if rest[:1] == b"\x00":
        reader = _Reader(rest)
        reader.pos = 1
    else:  # a hole: the structs after it come again; read past them here
        reader = _Reader(update)
        reader.pos = _structs_end(update)
    return _delete_set(reader, most)


def _structs_end(update: bytes) -> int:
    reader = _Reader(update)
    for _ in range(reader.var_uint()):
        count = reader.var_uint()
        reader.var_uint()  # client
        reader.var_uint()  # clock
        for _ in range(count):
            info = reader.uint8()
            kind = info & 0x1F
            if kind in (0, 10):
                reader.var_uint()
                continue
            if info & 0x80:
                reader.var_uint(), reader.var_uint()
            if info & 0x40:
                reader.var_uint(), reader.var_uint()
            if not info & 0xC0:
                if reader.var_uint() == 1:
                    reader.var_bytes()
                else:
                    reader.var_uint(), reader.var_uint()
                if info & 0x20:
                    reader.var_bytes()
            _content_length(reader, kind)
    return reader.pos


class DeleteSet:
    """A document's delete set, ready to tell whether a range is wholly in it: per client, its
    ranges sorted and merged (starts and ends apart, for bisect)."""

    def __init__(self, ranges: dict[int, list[tuple[int, int]]]):
        self.count = sum(map(len, ranges.values()))
        self.clients: dict[int, tuple[list[int], list[int]]] = {}
        for client, held in ranges.items():
            starts: list[int] = []
            ends: list[int] = []
            for start, length in sorted(held):
                if ends and start <= ends[-1]:
                    ends[-1] = max(ends[-1], start + length)
                else:
                    starts.append(start)
                    ends.append(start + length)
            self.clients[client] = starts, ends

    def new_ranges(self, ranges: dict[int, list[tuple[int, int]]]) -> int:
        """How many of these ranges are not wholly in the set (delete anything anew)."""
        count = 0
        for client, wanted in ranges.items():
            starts, ends = self.clients.get(client, ((), ()))
            if not starts:
                count += len(wanted)
                continue
            for clock, length in wanted:
                i = bisect.bisect_right(starts, clock) - 1
                if i < 0 or ends[i] < clock + length:
                    count += 1
        return count


def pieces(update: bytes, limit: int | None = None, whole: bool = False) -> int:
    """`pieces_and_deletions`, the count alone."""
    return pieces_and_deletions(update, limit, whole)[0]


def pieces_and_deletions(
    update: bytes, limit: int | None = None, whole: bool = False
) -> tuple[int, dict[int, list[tuple[int, int]]]]:
    """How many separate pieces (Yjs blocks, about 200 bytes of memory each in the room's
    document whatever their encoded size) the update may add to a document: its items and GC
    ranges, except an item that goes on from its writer's previous one as Yjs merges it: its
    origin is the writer's clock before it, its content of a kind Yjs merges (text, JSON, any
    values) and, after a struct of the same update, of that struct's kind and right origin. The
    first struct of an update goes on only as text (a keystroke), whose previous item is in the
    document: embeds, nested types and formats never merge, and a chain of them each naming the
    one before as its origin grew a worker by 550 bytes per piece, 27 per byte sent. `whole`:
    the update is a whole document's state, every struct a piece. Reading stops once the count
    passes `limit` (its delete set then left unread, empty). Raises Unreadable.

    Also its delete set, client id -> (clock, length) ranges, counted apart
    (`deletion_pieces`): an update made as a diff (a sync step 2) carries the document's whole
    delete set, every range deleted long ago again.
    """
    data, pos, end = update, 0, len(update)

    def var_uint() -> int:  # lib0's readVarUint, inlined for speed: this reads every struct
        nonlocal pos
        if pos >= end:
            raise Unreadable("the update ends early")
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            return byte
        value, shift = byte & 0x7F, 7
        while True:
            if pos >= end:
                raise Unreadable("the update ends early")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise Unreadable("a number is too long")

    def skip_bytes() -> None:
        nonlocal pos
        length = var_uint()
        if pos + length > end:
            raise Unreadable("the update ends early")
        pos += length

    count = 0
    for _ in range(var_uint()):
        structs = var_uint()
        client = var_uint()
        clock = var_uint()
        previous = None  # the kind and right origin of this writer's struct before, in this update
        for _ in range(structs):
            if pos >= end:
                raise Unreadable("the update ends early")
            info = data[pos]
            pos += 1
            kind = info & 0x1F
            if kind in (0, 10):  # GC, skip
                clock += var_uint()
                count += kind == 0
                previous = None
                continue
            origin = right = None
            if info & 0x80:  # origin
                origin = var_uint(), var_uint()
            if info & 0x40:  # right origin
                right = var_uint(), var_uint()
            goes_on = (
                not whole
                and origin == (client, clock - 1)
                and kind in _MERGING
                and ((kind, right) == previous if previous is not None else kind == 4)
            )
            previous = kind, right
            if not info & 0xC0:  # the parent is written out
                if var_uint() == 1:
                    skip_bytes()
                else:
                    var_uint()
                    var_uint()
                if info & 0x20:
                    skip_bytes()
            if kind == 1:  # deleted
                clock += var_uint()
            else:
                reader = _Reader(data)
                reader.pos = pos
                clock += _content_length(reader, kind)
                pos = reader.pos
            count += not goes_on
            if limit is not None and count > limit:
                return count, {}
    reader = _Reader(data)
    reader.pos = pos
    return count, _delete_set(reader)


_MERGING = (1, 2, 4, 8)  # deleted, JSON, string, any: the content kinds Yjs merges with their kind


def delete_ranges(update: bytes) -> dict[int, list[tuple[int, int]]]:
    """The update's delete set: client id -> (clock, length) ranges. Raises Unreadable."""
    return pieces_and_deletions(update)[1]


def deletion_pieces(ranges: dict[int, list[tuple[int, int]]], deleted: DeleteSet | None = None) -> int:
    """The pieces the update's deletions may add: a deletion splits the items at its two ends,
    so deleting every other character of one pasted item made 2 pieces per 4 bytes sent (71
    bytes of memory per byte). `deleted`: the document's own delete set: a range wholly in it
    deletes nothing anew and counts nothing (a sync step 2 carries every deletion ever made)."""
    if deleted is None:
        return 2 * sum(map(len, ranges.values()))
    return 2 * deleted.new_ranges(ranges)


def waits(update: bytes, clocks: dict[int, int]) -> str | None:
    """What in the update a document whose state vector is `clocks` could not take in whole,
    read before it is applied: "items" (one builds on an item neither has: Yjs and pycrdt keep
    it aside, see `not_all_in`), "deletions ahead" (see `left_out`), or None. Integrates the
    structs as Yjs does (`integrateStructs`: a writer's structs in order, another writer's
    first when one builds on it), counting clocks only. Raises Unreadable."""
    return read_before(update, clocks)[0]


def read_before(update: bytes, clocks: dict[int, int]) -> tuple[str | None, set[int]]:
    """`waits`, and the client ids the update writes new items under (if it waits: those read
    before what it waits for)."""
    writers, deletes = _read(update)
    have = dict(clocks)
    next_of = dict.fromkeys(writers, 0)

    def lacking(client: int, struct: _Struct) -> tuple[int, int] | None:
        if struct.clock > have.get(client, 0):
            return client, struct.clock - 1
        for needed in struct.needs:
            if needed[1] >= have.get(needed[0], 0):
                return needed
        return None

    for start in writers:
        stack: list[int] = []  # writers waiting for the one after them, and `waiting` as a set
        waiting: set[int] = set()
        client = start
        while True:
            structs = writers[client]
            if next_of[client] == len(structs):
                if not stack:
                    break
                client = stack.pop()
                waiting.discard(client)
                continue
            struct = structs[next_of[client]]
            if struct.clock + struct.length <= have.get(client, 0) or not struct.counts:
                next_of[client] += 1  # held already, or a skip (what follows shows the hole)
                continue
            needed = lacking(client, struct)
            if needed is None:
                have[client] = struct.clock + struct.length
                next_of[client] += 1
                if stack:  # the one that waited for it tries again
                    client = stack.pop()
                    waiting.discard(client)
                continue
            owner = needed[0]
            if owner == client or owner in waiting or next_of.get(owner, 0) >= len(writers.get(owner, ())):
                return "items", _advanced(have, clocks)  # a hole, or writers each waiting for another
            stack.append(client)
            waiting.add(client)
            client = owner
    for client, ranges in deletes.items():
        # A range of no items beyond the clocks deletes nothing, but pycrdt keeps it (`left_out`)
        if any(clock + length > have.get(client, 0) for clock, length in ranges):
            return "deletions ahead", _advanced(have, clocks)
    return None, _advanced(have, clocks)


def _advanced(after: dict[int, int], before: dict[int, int]) -> set[int]:
    return {client for client, clock in after.items() if clock > before.get(client, 0)}


def new_writers(update: bytes, clocks: dict[int, int], most: int) -> set[int] | None:
    """The client ids an update writes items under that a document of these clocks lacks (what
    `read_before` tells of a small update), for an update too large to be read struct by
    struct: pycrdt's diff against the clocks names one such writer first; the next pass counts
    that one as held in full. One pass per writer; None if there are more than `most`. Raises
    Unreadable for items past what pycrdt counts (32-bit clocks)."""
    found: set[int] = set()
    while True:
        held = {**clocks, **dict.fromkeys(found, 2**32 - 1)}
        rest = _Reader(get_update(update, _encode_state_vector(held)))
        if not rest.var_uint():
            return found
        rest.var_uint()  # how many structs
        client = rest.var_uint()
        if client in found:
            raise Unreadable("an item's clock is past 2^32")
        if len(found) >= most:
            return None
        found.add(client)


def _encode_state_vector(clocks: dict[int, int]) -> bytes:
    out = bytearray(protocol.write_var_uint(len(clocks)))
    for client, clock in clocks.items():
        out += protocol.write_var_uint(client) + protocol.write_var_uint(clock)
    return bytes(out)


def left_out(update: bytes, state: bytes) -> str | None:
    """What of the update a document of this state vector (read after applying it) lacks: "items"
    (it holds items the document has not integrated: see `not_all_in`), "deletions
    ahead" (it deletes items the document does not have yet; Yjs keeps such a deletion and
    applies it to them when they come, so a client could delete the server's or another
    editor's changes to come, and the update log would keep that), or None."""
    rest = _Reader(get_update(update, state))  # its items the state lacks, then its delete set
    if rest.var_uint():
        return "items"
    deletes = _delete_set(rest)
    if deletes:
        clocks = state_vector(state)
        for client, ranges in deletes.items():
            have = clocks.get(client, 0)
            if any(clock + length > have for clock, length in ranges):
                return "deletions ahead"
    return None


def not_all_in(update: bytes, state: bytes) -> bool:
    """Whether the update holds items a document of this state vector has not integrated (its
    diff against the state names at least one client; deletions always come along).

    pycrdt 0.14.13 keeps aside an update that came before one it follows, and shows part of it
    in the document at once without counting it: yrs then takes those items for new ones in
    later transactions, raises no events for their changes (the schema repair never sees
    them) and frees them on deletion while observers still hold them (reading one hung or
    crashed the worker); once the missing update comes, part of it may stay out for good
    (Yjs integrates all of it). A client update that waits makes the room reload
    (`Room.restart`); another worker's is applied again once the hole it is beyond is filled
    (`_apply_early_again`)."""
    return get_update(update, state)[0] != 0


def is_panic(exc: BaseException) -> bool:
    """pycrdt's Rust code panicked: pyo3 raises its PanicException, a BaseException that no
    `except Exception` catches, and the Doc may hold part of what it was doing."""
    return type(exc).__name__ == "PanicException"
