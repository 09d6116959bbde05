"""Encrypting secrets at rest (kernel server tokens, share-link tokens) with a key derived from
SECRET_KEY.

Rules:
- Fernet (AES-128-CBC + HMAC-SHA256) with the key `urlsafe_b64encode(sha256(SECRET_KEY))` for
  kernel server tokens and `sha256(purpose NUL SECRET_KEY)` for any other `purpose`, so one
  kind of secret cannot be passed off as another: the database alone is not enough to read a
  token; the running deployment's SECRET_KEY is needed.
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


def _fernet(purpose: str) -> Fernet:
    material = settings.SECRET_KEY if not purpose else f"{purpose}\0{settings.SECRET_KEY}"
    digest = hashlib.sha256(material.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str, purpose: str = "") -> str:
    return _fernet(purpose).encrypt(plaintext.encode()).decode("ascii")


def decrypt(ciphertext: str, purpose: str = "") -> str:
    try:
        return _fernet(purpose).decrypt(ciphertext.encode("ascii")).decode()
    except (InvalidToken, ValueError) as exc:
        raise TokenUnreadable("The stored token cannot be decrypted.") from exc


def hash_token(token: str) -> str:
    """What a token is looked up by (share links, invitations): its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()
