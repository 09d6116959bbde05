"""What a worker process does with its own memory once it has started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_sets_what_it_imported_aside_from_the_garbage_collector():
    """A full collection walks every object the collector tracks; the 300,000 a worker's imports
    make never become garbage, and walking them again and again held the event loop for 300-450
    ms at a time with 1,000 rooms open. The ASGI application freezes them once it is built."""
    probe = (
        "import gc\n"
        "before = gc.get_freeze_count()\n"
        "import config.asgi\n"
        "print(before, gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    before, frozen, tracked = map(int, result.stdout.split())
    assert before == 0
    assert frozen > 100_000
    assert tracked < frozen / 10  # what a full collection still walks
