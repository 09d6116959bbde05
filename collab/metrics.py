"""Counters of this worker for operators (`/metrics`). Pure bookkeeping in the event loop:
no I/O, no locks (one event loop per worker). Gauges are read from the live objects when
the metrics are rendered, counters are bumped where the event happens."""

from __future__ import annotations

from collections import Counter

COUNTERS: Counter[str] = Counter()

HELP = {
    "updates_received": "Document updates accepted from sockets.",
    "awareness_dropped": "Awareness messages dropped (another socket's client id, throttled, too large).",
    "awareness_publish_dropped": "Presence messages not sent to other workers (layer down or backed up).",
    "frames_malformed": "Sockets closed with 4400 for a malformed frame.",
    "frames_too_large": "Sockets closed with 4413 for a message, document or one person's sockets too many.",
    "sockets_refused_per_person": "Sockets refused because one person had too many open.",
    "sockets_refused_room_full": "Sockets refused (4429): the room, or its share for link guests, was full.",
    "claims_refused": "Sockets closed (4429): their person showed presence with too many client ids at once.",
    "gap_updates_repaired": "Updates fetched from the database to repair gaps in the sequence.",
    "frames_written_direct": "Room frames written straight to a connection, encoded once per fan-out.",
    "frames_sent_awaited": "Room frames sent the ordinary way (sockets the direct path cannot serve).",
    "update_frames_sent": "Frames of document updates a room sent to its local sockets.",
    "updates_merged": "Document updates that shared a frame with others (the worker was behind).",
    "batches_not_published": "Batches not published (the channel layer hung too long); others repair them.",
    "ordered_publish_dropped": "Access changes, replacements, kernel states not published (layer backed up).",
    "handler_errors": "Socket handlers that failed unexpectedly (closed with 1011, cleaned up).",
}


def inc(name: str, by: int = 1) -> None:
    COUNTERS[name] += by
