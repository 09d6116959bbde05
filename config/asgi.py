"""ASGI entry: pages over HTTP, notebooks over websockets, one process (daphne)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from collab import daphne_patches  # noqa: E402
from collab.auth import websocket_auth_stack  # noqa: E402
from collab.routing import websocket_urlpatterns  # noqa: E402
from config import body_limit, logformat, memory  # noqa: E402
from kernels import cluster  # noqa: E402

daphne_patches.install()
body_limit.install()
logformat.redact_access_log()


async def http_app(scope, receive, send):
    # daphne has no startup hook (no ASGI lifespan): the first request of any kind makes this
    # worker part of the kernel cluster, so that it takes over kernels of workers that die
    # (`kernels.cluster`) even if it never serves the editor. Later calls return at once.
    await cluster.node().start()
    await django_asgi_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(websocket_auth_stack(URLRouter(websocket_urlpatterns))),
    }
)

# Import every view now rather than during the first visitor's request.
get_resolver().url_patterns  # noqa: B018
memory.settle()
