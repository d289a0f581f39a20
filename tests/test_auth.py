"""Password hashing and Authorization header checks for the admin port."""

from __future__ import annotations

import base64
import sys
import types

import pytest

from inferwatch.support import auth
from inferwatch.support.auth import check_authorization, hash_password, verify_password
from inferwatch.config import AuthConfig

FAST = 1_000  # iterations: keep the suite quick; the format is the same


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_hash_format_and_verify():
    encoded = hash_password("s3cret", iterations=FAST)
    algorithm, iterations, salt, digest = encoded.split("$")
    assert algorithm == "pbkdf2_sha256" and iterations == str(FAST)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert not verify_password("", encoded)
    assert hash_password("s3cret", iterations=FAST) != encoded  # salted


def test_default_iterations():
    assert hash_password("x").split("$")[1] == "200000"


def test_unicode_password():
    encoded = hash_password("pässwörd ✓", iterations=FAST)
    assert verify_password("pässwörd ✓", encoded)
    assert not verify_password("passwort", encoded)


@pytest.mark.parametrize("encoded", [
    "", "plain", "pbkdf2_sha256$abc$AAAA$AAAA", "pbkdf2_sha256$1000$!!$AAAA", "pbkdf2_sha256$0$AAAA$AAAA",
    "pbkdf2_sha256$1000$AAAA$", "md5$1$AAAA$AAAA", "pbkdf2_sha256$99999999999$AAAA$AAAA",
])
def test_malformed_hashes_are_false(encoded):
    assert verify_password("x", encoded) is False


def test_bcrypt_without_module_is_false(monkeypatch):
    monkeypatch.setitem(sys.modules, "bcrypt", None)
    assert verify_password("x", "$2b$12$" + "a" * 53) is False


def test_bcrypt_with_module(monkeypatch):
    fake = types.SimpleNamespace(checkpw=lambda pw, hashed: pw == b"right" and hashed.startswith(b"$2b$"))
    monkeypatch.setitem(sys.modules, "bcrypt", fake)
    assert verify_password("right", "$2b$12$whatever")
    assert not verify_password("wrong", "$2b$12$whatever")


def test_disabled_auth_allows_everything():
    assert check_authorization(None, AuthConfig())
    assert check_authorization("Bearer nonsense", AuthConfig())


def test_bearer():
    cfg = AuthConfig(bearer_token="tok-123")
    assert check_authorization("Bearer tok-123", cfg)
    assert check_authorization("bearer  tok-123 ", cfg)  # scheme is case-insensitive
    for header in (None, "", "Bearer", "Bearer tok-1234", "Bearer tok-12", "tok-123", "Basic tok-123",
                   "Bearer TOK-123"):
        assert not check_authorization(header, cfg), header


def test_basic():
    cfg = AuthConfig(basic_users={"prom": hash_password("pw:with:colons", iterations=FAST)})
    assert check_authorization(basic("prom", "pw:with:colons"), cfg)
    assert check_authorization(basic("prom", "pw:with:colons").replace("Basic", "BASIC"), cfg)
    for header in (basic("prom", "wrong"), basic("other", "pw:with:colons"), "Basic !!!notbase64",
                   "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
                   "Bearer pw:with:colons", "Basic"):
        assert not check_authorization(header, cfg), header


def test_bearer_and_basic_together():
    cfg = AuthConfig(bearer_token="tok", basic_users={"u": hash_password("p", iterations=FAST)})
    assert check_authorization("Bearer tok", cfg)
    assert check_authorization(basic("u", "p"), cfg)
    assert not check_authorization(basic("u", "tok"), cfg)


def test_basic_success_is_cached(monkeypatch):
    cfg = AuthConfig(basic_users={"u": hash_password("p", iterations=FAST)})
    calls = []
    real = auth.verify_password

    def counting(password, encoded):
        calls.append(password)
        return real(password, encoded)

    monkeypatch.setattr(auth, "verify_password", counting)
    header = basic("u", "p")
    for _ in range(5):
        assert check_authorization(header, cfg)
    assert len(calls) == 1
    # Failures are never cached, and a changed password invalidates the cached success.
    assert not check_authorization(basic("u", "q"), cfg)
    assert not check_authorization(basic("u", "q"), cfg)
    assert len(calls) == 3
    changed = AuthConfig(basic_users={"u": hash_password("new", iterations=FAST)})
    assert not check_authorization(header, changed)
    assert check_authorization(basic("u", "new"), changed)


def test_cache_is_bounded():
    cache = auth._VerifiedCache(size=3)
    for key in (b"a", b"b", b"c", b"d"):
        cache.add(key)
    assert b"a" not in cache and b"d" in cache
    assert len(cache._keys) == 3
