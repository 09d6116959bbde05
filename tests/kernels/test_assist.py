"""Completion and help requests: bounded inputs, trimmed replies, clear errors."""

from __future__ import annotations

import pytest
from django.conf import settings

from kernels import assist, cluster


@pytest.mark.parametrize(
    "args",
    [
        None,
        {},
        {"code": "x", "cursor_pos": 2},
        {"code": "x", "cursor_pos": -1},
        {"code": "x", "cursor_pos": True},
        {"code": "x", "cursor_pos": "1"},
        {"code": 5, "cursor_pos": 0},
        {"code": "x" * 101, "cursor_pos": 0},
    ],
)
def test_it_refuses_unusable_requests(args, settings):
    settings.KERNEL_ASSIST_MAX_CHARS = 100
    assert cluster.invalid_args("complete", args)
    assert cluster.invalid_args("inspect", args)


def test_it_takes_positions_in_code_points(settings):
    settings.KERNEL_ASSIST_MAX_CHARS = 100
    assert cluster.invalid_args("complete", {"code": "π = 1; π", "cursor_pos": 8}) is None
    assert assist.request("inspect", {"code": "len", "cursor_pos": 3}) == (
        "inspect_request",
        {"code": "len", "cursor_pos": 3, "detail_level": 0},
    )


def test_it_trims_what_a_kernel_answers():
    reply = {
        "status": "ok",
        "matches": ["a" * 1000, 5, *[f"m{i}" for i in range(1000)]],
        "cursor_start": 0,
        "cursor_end": 1,
    }
    shaped = assist.shape("complete", reply)
    assert len(shaped["matches"]) == settings.KERNEL_ASSIST_MAX_MATCHES
    assert len(shaped["matches"][0]) == settings.KERNEL_ASSIST_MAX_MATCH_CHARS
    backwards = {"status": "ok", "matches": ["x"], "cursor_start": 3, "cursor_end": 1}
    assert assist.shape("complete", backwards) == {"matches": []}
    help_text = assist.shape("inspect", {"status": "ok", "found": True, "data": {"text/plain": "h" * 10**6}})
    assert len(help_text["text"]) == settings.KERNEL_ASSIST_MAX_HELP_CHARS
    assert assist.shape("inspect", {"status": "error"}) == {"matches": [], "found": False}
