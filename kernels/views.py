"""Kernel endpoints: run cells, interrupt, restart, shut down, status, answer input().

Rules:
- Async views, so they run in the event loop where the Rooms and the bridges live (daphne/ASGI);
  access checks and the ORM go through `sync_to_async`.
- Every endpoint needs `Action.RUN` (`get_access` raises 403/404, or asks to sign in), checked
  here, on the worker that got the request; `kernels.cluster` then does the work on the worker
  that drives the notebook's kernel.
- POST bodies are JSON; CSRF is checked as for every POST (the editor sends `X-CSRFToken`).
- Nothing about the Jupyter Server (URL, token, kernel id) is ever returned.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from kernels import cluster
from kernels.bridge import request_meta
from notebooks.access import Action
from notebooks.views.common import get_access


def _check(request: HttpRequest, notebook_id: Any) -> tuple[Any, cluster.Who]:
    access = get_access(request, notebook_id, Action.RUN)
    user = access.principal.user
    who: cluster.Who = {
        "user_id": getattr(user, "pk", None),
        "key": access.principal.key,
        "meta": request_meta(request),
    }
    return user, who


async def _allowed(request: HttpRequest, notebook_id: Any) -> tuple[Any, cluster.Who]:
    return await sync_to_async(_check)(request, notebook_id)


def _body(request: HttpRequest) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return None
    return body if isinstance(body, dict) else None


async def _call(
    notebook_id, op: cluster.Op, request: HttpRequest, args: dict | None = None, allowed=None
) -> JsonResponse:
    user, who = allowed or await _allowed(request, notebook_id)
    reply = await cluster.call(notebook_id, op, args or {}, who, user)
    return JsonResponse(reply.get("body", {}), status=reply.get("status", 200))


@require_POST
async def run(request: HttpRequest, notebook_id) -> JsonResponse:
    return await _with_args(request, notebook_id, "run")


@require_POST
async def answer_input(request: HttpRequest, notebook_id) -> JsonResponse:
    return await _with_args(request, notebook_id, "input")


async def _with_args(request: HttpRequest, notebook_id, op: cluster.Op) -> JsonResponse:
    allowed = await _allowed(request, notebook_id)  # 403 before 400
    body = _body(request)
    error = cluster.invalid_args(op, body)
    if error:
        return JsonResponse({"error": error}, status=400)
    return await _call(notebook_id, op, request, body, allowed)


@require_POST
async def interrupt(request: HttpRequest, notebook_id) -> JsonResponse:
    return await _call(notebook_id, "interrupt", request)


@require_POST
async def restart(request: HttpRequest, notebook_id) -> JsonResponse:
    return await _call(notebook_id, "restart", request)


@require_POST
async def shutdown(request: HttpRequest, notebook_id) -> JsonResponse:
    return await _call(notebook_id, "shutdown", request)


@require_GET
async def status(request: HttpRequest, notebook_id) -> JsonResponse:
    return await _call(notebook_id, "status", request)
