"""What notebooks announce to the layers above it, as Django signals, so that this app never
imports the real-time engine. `collab` subscribes in its AppConfig.ready.

- `notebook_changed(notebook_id, kind)`, sent after the change commits: "access" (a grant, link
  or the notebook itself changed: live sockets re-check their role) or "replaced" (a new
  document epoch: open editors reload).
"""

from __future__ import annotations

from django.dispatch import Signal

notebook_changed = Signal()
