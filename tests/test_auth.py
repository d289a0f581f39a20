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


@pytest.fixture(autouse=True)
def fresh_budget(monkeypatch):
    """Each test starts with the default failure budget, not what earlier tests spent."""
    monkeypatch.setattr(auth, "failure_budget", auth.FailureBudget())
    monkeypatch.setattr(auth, "hashes", auth._HashCounts())


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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_failed_attempts_beyond_the_budget_are_refused_without_hashing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(auth, "failure_budget", auth.FailureBudget(burst=3, per_minute=6.0, max_clients=100,
                                                                   clock=clock))
    cfg = AuthConfig(basic_users={"u": hash_password("right", iterations=FAST)})
    calls = []
    real = auth.verify_password

    def counting(password, encoded):
        calls.append(password)
        return real(password, encoded)

    monkeypatch.setattr(auth, "verify_password", counting)
    attacker, neighbour = "192.0.2.7", "192.0.2.8"
    assert auth.authenticate(basic("u", "right"), cfg, attacker) is auth.AuthDecision.OK   # cached from now on
    assert len(calls) == 1
    decisions = [auth.authenticate(basic("u", f"guess{i}"), cfg, attacker) for i in range(20)]
    assert decisions[:3] == [auth.AuthDecision.DENIED] * 3
    assert decisions[3:] == [auth.AuthDecision.THROTTLED] * 17
    assert len(calls) == 1 + 3                        # no hash for the 17 refused attempts
    assert auth.failure_budget.refused == 17
    # Unknown users cost a (dummy) hash too, so they spend the same budget.
    assert auth.authenticate(basic("nobody", "x"), cfg, attacker) is auth.AuthDecision.THROTTLED
    # Another address has its own budget; a cached success passes even from the throttled one.
    assert auth.authenticate(basic("u", "guess"), cfg, neighbour) is auth.AuthDecision.DENIED
    assert auth.authenticate(basic("u", "right"), cfg, attacker) is auth.AuthDecision.OK
    assert len(calls) == 1 + 3 + 1
    # The budget refills at per_minute: 6/min is one attempt every 10 s.
    clock.now += 10
    assert auth.authenticate(basic("u", "guess"), cfg, attacker) is auth.AuthDecision.DENIED
    assert auth.authenticate(basic("u", "guess"), cfg, attacker) is auth.AuthDecision.THROTTLED
    assert len(calls) == 1 + 3 + 1 + 1
    # Bearer tokens cost no hash and have no budget.
    assert not check_authorization("Bearer x", AuthConfig(bearer_token="y"), attacker)


def test_failure_budget_table_is_bounded():
    budget = auth.FailureBudget(burst=1, per_minute=1.0, max_clients=3)
    for i in range(10):
        budget.charge(f"10.0.0.{i}")
    assert len(budget) == 3
    assert not budget.allow("10.0.0.9") and budget.allow("10.0.0.0")   # the oldest were forgotten


def test_admin_port_answers_429_after_the_budget(upstream, sidecar_factory):
    """Over HTTP: the admin port refuses a client past its budget with a JSON 429, counted."""
    import requests

    from conftest import admin_url, registry_samples

    sidecar = sidecar_factory(upstream.url, **{
        "admin.metrics_auth": {"basic_users": {"prom": hash_password("pw", iterations=FAST)}},
        "admin.failed_auth": {"burst": 2, "per_minute": 0.001}})
    codes = [requests.get(admin_url(sidecar, "/v1/status"), auth=("prom", f"bad{i}"), timeout=5) for i in range(5)]
    assert [r.status_code for r in codes] == [401, 401, 429, 429, 429]
    assert codes[-1].json()["error"] == "too_many_failed_logins" and codes[-1].headers["Retry-After"]
    ok = requests.get(admin_url(sidecar, "/metrics"), auth=("prom", "pw"), timeout=5)
    assert ok.status_code == 429   # even the right password: checking it would cost a hash
    samples = registry_samples(sidecar.metrics.registry)
    assert samples["inferwatch_auth_throttled_total"] == [({}, 4.0)]
    assert ({"result": "failure"}, 2.0) in samples["inferwatch_auth_password_checks_total"]
