"""Encrypting secrets at rest (kernel server tokens) with a key derived from SECRET_KEY.

Rules:
- Fernet (AES-128-CBC + HMAC-SHA256) with the key `urlsafe_b64encode(sha256(SECRET_KEY))`: the
  database alone is not enough to read a token; the running deployment's SECRET_KEY is needed.
- Changing SECRET_KEY makes stored tokens unreadable: `decrypt` then raises `TokenUnreadable`
  and the owner has to register the server again.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class TokenUnreadable(Exception):
    """The stored token cannot be decrypted (SECRET_KEY changed, or the row was tampered with)."""


def _fernet() -> Fernet:
    digest = hashlib.sha256(settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode("ascii")).decode()
    except (InvalidToken, ValueError) as exc:
        raise TokenUnreadable("The stored token cannot be decrypted.") from exc
