from asgiref.sync import async_to_sync
from django.apps import AppConfig

from notebooks.events import notebook_changed


def tell_rooms(sender, notebook_id, kind, **kwargs) -> None:
    """Every worker's room for the notebook re-checks its sockets (or reloads them)."""
    # Imported when called: fan-out reads the channel layer, which needs the settings.
    from collab.fanout import notify

    async_to_sync(notify)(notebook_id, kind)


class CollabConfig(AppConfig):
    name = "collab"

    def ready(self) -> None:
        notebook_changed.connect(tell_rooms, dispatch_uid="collab.tell_rooms")
