"""Encrypting secrets at rest (kernel server tokens, share-link tokens) with a key derived from
SECRET_KEY.

Rules:
- Fernet (AES-128-CBC + HMAC-SHA256) with the key `urlsafe_b64encode(sha256(SECRET_KEY))` for
  kernel server tokens and `sha256(purpose NUL SECRET_KEY)` for any other `purpose`, so one
  kind of secret cannot be passed off as another: the database alone is not enough to read a
  token; the running deployment's SECRET_KEY is needed.
- SECRET_KEY is rotated the Django way: the old key moves to SECRET_KEY_FALLBACKS, and tokens
  encrypted with it stay readable (new ones use the new key). A key dropped from both makes its
  tokens unreadable: `decrypt` then raises `TokenUnreadable` (a kernel server is registered
  again, a share link replaced).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class TokenUnreadable(Exception):
    """The stored token cannot be decrypted (SECRET_KEY changed, or the row was tampered with)."""


def _fernet(purpose: str, secret_key: str) -> Fernet:
    material = secret_key if not purpose else f"{purpose}\0{secret_key}"
    digest = hashlib.sha256(material.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _keys(purpose: str) -> MultiFernet:
    """The current key first (it encrypts), then the fallbacks (they only decrypt)."""
    secret_keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet(purpose, key) for key in secret_keys])


def encrypt(plaintext: str, purpose: str = "") -> str:
    return _keys(purpose).encrypt(plaintext.encode()).decode("ascii")


def decrypt(ciphertext: str, purpose: str = "") -> str:
    try:
        return _keys(purpose).decrypt(ciphertext.encode("ascii")).decode()
    except (InvalidToken, ValueError) as exc:
        raise TokenUnreadable("The stored token cannot be decrypted.") from exc


def hash_token(token: str) -> str:
    """What a token is looked up by (share links, invitations): its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()
