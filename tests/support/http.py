"""Django's test client for the pages: signed in as someone, uploading notebooks."""

from __future__ import annotations

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
