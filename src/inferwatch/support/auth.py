"""Admin-port authentication: a static bearer token and/or basic-auth users with hashed passwords.

Password hashes are ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` (stdlib only; made by
``inferwatch hash-password``); bcrypt ``$2b$`` hashes also work when the ``bcrypt`` module is
installed. Every secret comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from inferwatch.config import AuthConfig

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 200_000
# Hashes come from the config file, but a typo must not make one login take minutes.
MAX_ITERATIONS = 10_000_000
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_CACHE_SIZE = 256


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` with a random 16-byte salt."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be from 1 to {MAX_ITERATIONS}, got {iterations}")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join((ALGORITHM, str(iterations), base64.b64encode(salt).decode("ascii"),
                     base64.b64encode(digest).decode("ascii")))


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded``; False for anything malformed or unsupported."""
    if encoded.startswith(_BCRYPT_PREFIXES):
        try:
            import bcrypt
        except ImportError:
            return False
        try:
            return bool(bcrypt.checkpw(password.encode("utf-8"), encoded.encode("ascii")))
        except (ValueError, TypeError, UnicodeEncodeError):
            return False
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        return False
    try:
        iterations = int(parts[1])
        salt, expected = _b64decode(parts[2]), _b64decode(parts[3])
    except (ValueError, binascii.Error):
        return False
    if not 1 <= iterations <= MAX_ITERATIONS or not expected:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, dklen=len(expected))
    return hmac.compare_digest(actual, expected)


class _VerifiedCache:
    """Recently verified basic credentials, by digest (never the password), bounded LRU."""

    def __init__(self, size: int = _CACHE_SIZE):
        self.size = size
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return True
            return False

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self.size:
                self._keys.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


_verified = _VerifiedCache()
_dummy_hash: str | None = None


def _dummy() -> str:
    # Unknown users are checked against this so their answer takes as long as a known user's.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    return _dummy_hash


def _check_basic(credentials: str, header: str, users: dict[str, str]) -> bool:
    try:
        decoded = _b64decode(credentials.strip()).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    user, sep, password = decoded.partition(":")
    if not sep:
        return False
    encoded = users.get(user)
    if encoded is None:
        verify_password(password, _dummy())
        return False
    # Keyed by the stored hash too, so a changed password invalidates the cached success.
    key = hashlib.sha256(f"{encoded}\0{header}".encode("utf-8", "surrogatepass")).digest()
    if key in _verified:
        return True
    if verify_password(password, encoded):
        _verified.add(key)
        return True
    return False


def check_authorization(header_value: str | None, auth: AuthConfig) -> bool:
    """True if auth is disabled or the ``Authorization`` header carries valid credentials."""
    if not auth.enabled:
        return True
    if not header_value:
        return False
    scheme, _, credentials = header_value.strip().partition(" ")
    scheme = scheme.lower()  # schemes are case-insensitive (RFC 9110)
    credentials = credentials.strip()
    if scheme == "bearer" and auth.bearer_token and credentials:
        # Comparing digests keeps the comparison constant-time even across lengths.
        given = hashlib.sha256(credentials.encode("utf-8", "surrogatepass")).digest()
        wanted = hashlib.sha256(auth.bearer_token.encode("utf-8")).digest()
        return hmac.compare_digest(given, wanted)
    if scheme == "basic" and auth.basic_users and credentials:
        return _check_basic(credentials, header_value, auth.basic_users)
    return False


__all__ = ["hash_password", "verify_password", "check_authorization"]
