"""Django's test client for the pages: signed in as someone, uploading notebooks; and httpx
clients of a running worker, signed in by a session cookie, posting forms as a browser does."""

from __future__ import annotations

import httpx
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def upload(client, *names_and_bytes):
    files = [
        SimpleUploadedFile(name, data, content_type="application/json") for name, data in names_and_bytes
    ]
    return client.post("/notebooks/upload", {"files": files}, follow=True)


def owner_client(port: int, cookie: str) -> httpx.Client:
    name, value = cookie.split("=", 1)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", cookies={name: value}, timeout=20)
    client.get("/notebooks/")  # sets the csrftoken cookie
    return client


def post(client: httpx.Client, path: str, data: dict) -> httpx.Response:
    token = client.cookies["csrftoken"]
    return client.post(
        path,
        data={**data, "csrfmiddlewaretoken": token},
        headers={"Referer": str(client.base_url) + path, "Origin": str(client.base_url)},
    )
