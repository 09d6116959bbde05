"""Static files after `collectstatic` (as the `serve` command runs it): hashed names in pages,
served brotli- or gzip-encoded with a far-future cache; before it, plain names still work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import call_command
from django.template import Context, Template
from django.test import Client, override_settings

from config.static_collect import STAMP, collect_if_changed

pytestmark = pytest.mark.django_db


def site_storages(storages: dict) -> dict:
    """The site's own storage (the suite's default swaps it for Django's plain one)."""
    return {**storages, "staticfiles": {"BACKEND": "config.storage.StaticStorage"}}


@pytest.fixture(autouse=True)
def _site_storage(settings):
    settings.STORAGES = site_storages(settings.STORAGES)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """The site's static files collected once (seconds of hashing and compressing) for the
    tests that only read them."""
    from django.conf import settings

    root = tmp_path_factory.mktemp("collected")
    with override_settings(STATIC_ROOT=root, STORAGES=site_storages(settings.STORAGES)):
        call_command("collectstatic", interactive=False, verbosity=0)
    return root


def static_url(name: str) -> str:
    return Template("{% load static %}{% static name %}").render(Context({"name": name}))


def test_it_serves_hashed_compressed_files_with_a_far_future_cache(settings, collected):
    settings.STATIC_ROOT = collected
    url = static_url("dist/editor.js")
    assert url != "/static/dist/editor.js"
    assert url.startswith("/static/dist/editor.")
    response = Client().get(url, HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert "immutable" in response["Cache-Control"]
    assert "max-age=315360000" in response["Cache-Control"]


def test_a_browser_that_takes_brotli_gets_the_brotli_file(settings, collected):
    settings.STATIC_ROOT = collected
    url = static_url("dist/editor.js")
    plain = Client().get(url)
    response = Client().get(url, HTTP_ACCEPT_ENCODING="gzip, deflate, br, zstd")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "br"
    assert "Accept-Encoding" in response["Vary"]
    body = b"".join(response.streaming_content)
    assert len(body) < len(b"".join(plain.streaming_content)) / 3
    # the on-demand chunks the bundle imports are compressed the same way
    chunk = next((collected / "dist" / "chunks").glob("*.js.br"))
    assert chunk.stat().st_size > 0


def test_before_collectstatic_the_plain_names_are_served(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "empty"
    (tmp_path / "empty").mkdir()
    assert static_url("dist/editor.js") == "/static/dist/editor.js"
    response = Client().get("/static/dist/editor.js")
    assert response.status_code == 200


def test_it_collects_again_only_when_a_source_changed(settings, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.css").write_text("body { color: red }")
    settings.STATICFILES_DIRS = [source]
    # this folder alone: the apps' own files would be hashed and compressed three times
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    settings.STATIC_ROOT = tmp_path / "collected"
    settings.STATIC_ROOT.mkdir()
    assert collect_if_changed() is True
    assert collect_if_changed() is False  # the same sources: nothing to do
    (source / "app.css").write_text("body { color: blue }")
    assert collect_if_changed() is True
    assert "blue" in (settings.STATIC_ROOT / "app.css").read_text()
    (settings.STATIC_ROOT / STAMP).unlink()
    assert collect_if_changed() is True  # no stamp: collected again


def test_every_page_names_an_icon_that_is_served(settings, collected):
    """Without one, browsers ask for /favicon.ico on every page: a 404 in the console."""
    settings.STATIC_ROOT = collected
    page = Client().get("/accounts/login/").content.decode()
    icon = static_url("img/favicon.svg")
    assert f'<link rel="icon" href="{icon}" type="image/svg+xml">' in page
    response = Client().get(icon)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"


def test_workers_started_together_collect_once(settings, tmp_path):
    """Each worker of a Procfile collects at its start: two at once both cleared and filled the
    folder, one under the other's feet."""
    source = tmp_path / "src"
    source.mkdir()
    for i in range(200):
        (source / f"style{i}.css").write_text(f".c{i} {{ color: red }}")
    settings.STATICFILES_DIRS = [source]
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    settings.STATIC_ROOT = tmp_path / "collected"
    start = threading.Barrier(2)

    def worker() -> bool:
        start.wait()
        return collect_if_changed()

    with ThreadPoolExecutor(2) as pool:
        ran = sorted(pool.map(lambda _: worker(), range(2)))
    assert ran == [False, True]
    assert len(list(settings.STATIC_ROOT.glob("style*.css"))) == 400  # each file and its hashed copy
