from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from collab.consumers import NotebookConsumer


class NoSuchPath(AsyncWebsocketConsumer):
    """Any other websocket path: the close code of a notebook that does not exist, not the
    server error Channels' router gives a path it cannot match."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=4404, reason="There is no notebook at this address.")


websocket_urlpatterns = [
    path("ws/notebooks/<uuid:notebook_id>", NotebookConsumer.as_asgi()),
    re_path(r"", NoSuchPath.as_asgi()),
]
