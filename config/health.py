"""`/healthz` for load balancers and `/metrics` (Prometheus text) for operators.

`/healthz` needs no login and tells the public nothing but "ok" (200) or "unavailable" (503):
the database answers a query, the channel layer carries a message, the kernel server accepts
a TCP connection; each check is bounded by HEALTH_TIMEOUT seconds and they run at once.
`/metrics` exists only when METRICS_TOKEN is set and answers only `Authorization: Bearer
<token>` (404 otherwise, so its presence is not advertised); it reads this worker's live
objects (each worker has its own metrics: scrape every worker, not the proxy).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import Http404, HttpResponse

from collab import metrics
from collab.fanout import fanout
from collab.rooms import ROOMS
from kernels.bridge import BRIDGES

log = logging.getLogger(__name__)


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer() -> None:
    # A plain name, not `new_channel()`: channels-redis reads all of a worker's "!" channels
    # under one lock, which the worker's cross-worker reader holds while it waits.
    layer = get_channel_layer()
    channel = f"health.{uuid.uuid4().hex}"
    await layer.send(channel, {"type": "health.ping"})
    await layer.receive(channel)


async def _kernel_server() -> None:
    url = settings.JUPYTER_SERVER_URL
    if not url:
        return  # started by `serve` on its first need; nothing to reach yet
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _, writer = await asyncio.open_connection(parts.hostname, port)
    writer.close()


async def checks() -> dict[str, bool]:
    timeout = settings.HEALTH_TIMEOUT
    names = {"database": database_sync_to_async(_database)(), "channel_layer": _channel_layer()}
    names["kernel_server"] = _kernel_server()

    async def bounded(name, check) -> bool:
        try:
            await asyncio.wait_for(check, timeout)
        except Exception as e:  # one line: a balancer asks every few seconds during an outage
            log.warning("health check %s failed: %s", name, (str(e).splitlines() or [type(e).__name__])[0])
            return False
        return True

    results = await asyncio.gather(*(bounded(n, c) for n, c in names.items()))
    return dict(zip(names, results, strict=True))


async def healthz(request) -> HttpResponse:
    ok = all((await checks()).values())
    response = HttpResponse("ok\n" if ok else "unavailable\n", status=200 if ok else 503)
    response["Content-Type"] = "text/plain; charset=utf-8"
    response["Cache-Control"] = "no-store"
    return response


def _authorized(request) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _gauges() -> dict[str, tuple[str, float | dict[str, float]]]:
    rooms = list(ROOMS.values())
    kernels: dict[str, float] = {}
    for bridge in BRIDGES.values():
        kernels[bridge.status] = kernels.get(bridge.status, 0) + 1
    inbox = getattr(fanout().layer, "inbox", None)  # Redis pub/sub; the in-memory layer keeps none
    return {
        "rooms_open": ("Rooms (notebooks) loaded in this worker.", len(rooms)),
        "sockets": ("Open notebook sockets.", sum(len(r.sockets) for r in rooms)),
        "persistence_pending_updates": (
            "Updates applied but not yet committed to the database (persistence lag).",
            sum(len(r._pending) for r in rooms),
        ),
        "relay_queue_batches": (
            "Committed batches waiting to be relayed to sockets and other workers.",
            sum(r._committed.qsize() for r in rooms),
        ),
        "gap_updates_waiting": (
            "Updates received beyond a gap in the sequence, waiting for its repair.",
            sum(len(r._ahead) for r in rooms),
        ),
        "fanout_buffered_messages": (
            "Fan-out messages received from Redis but not yet handled by this worker.",
            inbox.qsize() if inbox is not None else 0,
        ),
        "fanout_down": (
            "1 while this worker cannot reach the other workers (its rooms catch up from the database).",
            int(fanout().down),
        ),
        "kernels": ("Kernel bridges of this worker by status.", kernels),
    }


def render() -> str:
    lines: list[str] = []
    for name, (help_text, value) in _gauges().items():
        lines += [f"# HELP collab_{name} {help_text}", f"# TYPE collab_{name} gauge"]
        if isinstance(value, dict):
            lines += [f'collab_{name}{{status="{k}"}} {v}' for k, v in sorted(value.items())]
        else:
            lines.append(f"collab_{name} {value}")
    for name, help_text in metrics.HELP.items():
        lines += [f"# HELP collab_{name}_total {help_text}", f"# TYPE collab_{name}_total counter"]
        lines.append(f"collab_{name}_total {metrics.COUNTERS[name]}")
    return "\n".join(lines) + "\n"


async def metrics_view(request) -> HttpResponse:
    if not _authorized(request):
        raise Http404
    response = HttpResponse(render(), content_type="text/plain; version=0.0.4; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response
