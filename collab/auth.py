"""Who opens a websocket: Channels' cookie, session and auth middleware, except that a database
that cannot be reached while the session and user are read closes the socket with 4503, as the
consumer does when the notebook itself cannot be read. Channels reads them before the consumer
runs, so without this a join during a database outage was refused with HTTP 500 (and a
traceback logged per attempt), which y-websocket's provider treats like any dropped socket
instead of the "reconnecting" the close code says. A database that does not answer within
`SESSION_WAIT` is taken for unreachable too."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.db import Error as DjangoDatabaseError

log = logging.getLogger(__name__)

UNAVAILABLE = 4503
UNAVAILABLE_REASON = "The server cannot open this notebook right now. Reconnecting."
# The longest a join waits for its session and user. Daphne drops a handshake it has not
# accepted within its connect timeout (5 s) without an answer, and nginx takes that for a
# failed worker: a database that hung (neither answering nor refusing) for 10 s had both
# workers "temporarily disabled", every page and socket answered 502 through the hang and
# for 5.6-8 s after it.
SESSION_WAIT = 3.0

DATABASE_ERRORS: tuple[type[BaseException], ...] = (DjangoDatabaseError,)
with contextlib.suppress(ImportError):  # raised bare where Django does not wrap the driver's call
    import psycopg

    DATABASE_ERRORS += (psycopg.Error,)


class UserOrUnavailable(AuthMiddleware):
    """`AuthMiddleware` that answers a database error while resolving the user (which loads the
    session) by accepting the socket and closing it with 4503; one warning line, no traceback.
    Errors of the consumer itself are not caught here."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        self.populate_scope(scope)
        try:
            await asyncio.wait_for(self.resolve_scope(scope), SESSION_WAIT)
        except (*DATABASE_ERRORS, TimeoutError) as e:
            if scope["type"] != "websocket":
                raise
            first_line = (str(e).splitlines() or [""])[0]
            if isinstance(e, TimeoutError):
                first_line = f"no answer within {SESSION_WAIT:g} s"
            log.warning(
                "a websocket join found the database unreachable (%s: %s); closed with %d",
                type(e).__name__,
                first_line,
                UNAVAILABLE,
            )
            await close_unavailable(receive, send)
            return None
        return await self.inner(scope, receive, send)


async def close_unavailable(receive, send) -> None:
    """Accept the websocket handshake and close it at once with 4503 and its reason."""
    message = await receive()
    if message["type"] != "websocket.connect":  # the client went away first
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": UNAVAILABLE, "reason": UNAVAILABLE_REASON})


def websocket_auth_stack(inner):
    """`channels.auth.AuthMiddlewareStack` with `UserOrUnavailable` in place of `AuthMiddleware`."""
    return CookieMiddleware(SessionMiddleware(UserOrUnavailable(inner)))
