from django.urls import path

from collab.consumers import NotebookConsumer

websocket_urlpatterns = [
    path("ws/notebooks/<uuid:notebook_id>", NotebookConsumer.as_asgi()),
]
