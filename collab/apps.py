from asgiref.sync import async_to_sync
from django.apps import AppConfig

from notebooks import live
from notebooks.events import notebook_changed


def tell_rooms(sender, notebook_id, kind, **kwargs) -> None:
    """Every worker's room for the notebook re-checks its sockets (or reloads them)."""
    # Imported when called: fan-out reads the channel layer, which needs the settings.
    from collab.fanout import notify

    async_to_sync(notify)(notebook_id, kind)


def live_in_rooms(notebook_id: str) -> set[str]:
    """People with an open socket on the notebook: this worker's sockets, and everyone the
    room's presence knows (awareness is relayed between workers, stamped with `Principal.key`)."""
    from collab.rooms import ROOMS  # not at the top: apps.py is imported before models load

    room = ROOMS.get(notebook_id)
    if room is None:
        return set()
    keys = {s.principal.key for s in list(room.sockets) if getattr(s, "principal", None)}
    keys |= {u["id"] for u in room.presence.users() if isinstance(u, dict) and u.get("id")}
    return keys


class CollabConfig(AppConfig):
    name = "collab"

    def ready(self) -> None:
        notebook_changed.connect(tell_rooms, dispatch_uid="collab.tell_rooms")
        live.provide(live_in_rooms)
