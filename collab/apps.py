from django.apps import AppConfig


class CollabConfig(AppConfig):
    name = "collab"

    def ready(self) -> None:
        from notebooks import live

        live.provide(live_in_rooms)


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
