"""Admin-port authentication: a static bearer token and/or basic-auth users with hashed passwords.

Password hashes are ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` (stdlib only; made by
``inferwatch hash-password``); bcrypt ``$2b$`` hashes also work when the ``bcrypt`` module is
installed. Every secret comparison is constant-time.

A password hash costs tens of milliseconds of CPU (pbkdf2 at 200,000 iterations: ~45-85 ms;
bcrypt cost 12: ~240 ms). Both release the GIL (measured: another thread's longest stall was
one 5 ms switch interval), so what a flood of wrong passwords takes from serving is CPU, not
the GIL. Three things bound it:

- successful checks are cached (``_VerifiedCache``), so a legitimate client pays once;
- every client address has a budget of failed checks (``FailureBudget``): past it, the answer
  is 429 before any hash is computed;
- at most one hash is computed at a time in the process, so however many admin threads (or
  an executor) verify at once, hashing takes at most one core from the proxy.

Call ``authenticate`` from a worker thread (the threaded admin server, or an asyncio server's
``run_in_executor``), never on an event loop: a hash would stall that loop for its duration.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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


class AuthDecision(enum.Enum):
    OK = "ok"
    DENIED = "denied"          # answer 401
    THROTTLED = "throttled"    # answer 429 with THROTTLED_BODY: the client's failure budget is spent


THROTTLED_BODY = {"error": "too_many_failed_logins",
                  "detail": "too many failed basic-auth attempts from this address; retry later"}


class FailureBudget:
    """Failed password checks a client may cost: a token bucket per client address.

    Each failed basic-auth check (a wrong password or an unknown user: both cost a hash) takes
    one token; tokens come back at ``per_minute``, up to ``burst``. With less than one token the
    client's next uncached check is refused before any hash is computed (``refused`` counts
    them). The table holds at most ``max_clients`` addresses, least recently failed forgotten
    first (such a client starts afresh): memory is bounded whatever the number of addresses.
    """

    def __init__(self, burst: int = 10, per_minute: float = 10.0, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self.burst, self.per_minute, self.max_clients, self.clock = burst, per_minute, max_clients, clock
        self.refused = 0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # client -> (tokens, when)
        self._lock = threading.Lock()

    def _tokens(self, client: str, now: float) -> float:
        tokens, when = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + max(now - when, 0.0) * self.per_minute / 60.0)

    def allow(self, client: str) -> bool:
        """Whether ``client`` may cost a hash now; a refusal is counted."""
        with self._lock:
            if client not in self._buckets or self._tokens(client, self.clock()) >= 1.0:
                return True
            self.refused += 1
            return False

    def charge(self, client: str) -> None:
        """Take a token for one failed check by ``client``."""
        with self._lock:
            now = self.clock()
            self._buckets[client] = (max(self._tokens(client, now) - 1.0, 0.0), now)
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


class _HashCounts:
    """Password hashes computed, by result; one at a time (see the module's docstring)."""

    def __init__(self) -> None:
        self.success = 0
        self.failure = 0
        self.slot = threading.Lock()


_verified = _VerifiedCache()
failure_budget = FailureBudget()
hashes = _HashCounts()
_dummy_hash: str | None = None


def configure_failure_budget(burst: int, per_minute: float, max_clients: int) -> FailureBudget:
    """Replace the process's failure budget (``admin.failed_auth``); returns the new one."""
    global failure_budget
    failure_budget = FailureBudget(burst, per_minute, max_clients)
    return failure_budget


def _dummy() -> str:
    # Unknown users are checked against this so their answer takes as long as a known user's.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    return _dummy_hash


def _hash_check(password: str, encoded: str) -> bool:
    with hashes.slot:
        ok = verify_password(password, encoded)
        if ok:
            hashes.success += 1
        else:
            hashes.failure += 1
    return ok


def _check_basic(credentials: str, header: str, users: dict[str, str], client: str) -> AuthDecision:
    try:
        decoded = _b64decode(credentials.strip()).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return AuthDecision.DENIED
    user, sep, password = decoded.partition(":")
    if not sep:
        return AuthDecision.DENIED
    encoded = users.get(user)
    # Keyed by the stored hash too, so a changed password invalidates the cached success.
    key = hashlib.sha256(f"{encoded}\0{header}".encode("utf-8", "surrogatepass")).digest()
    if encoded is not None and key in _verified:
        return AuthDecision.OK   # a cached success passes even from a throttled address (NAT)
    budget = failure_budget
    if not budget.allow(client):
        return AuthDecision.THROTTLED
    # Unknown users are checked against a dummy hash, so their answer takes as long.
    if _hash_check(password, _dummy() if encoded is None else encoded) and encoded is not None:
        _verified.add(key)
        return AuthDecision.OK
    budget.charge(client)
    return AuthDecision.DENIED


def authenticate(header_value: str | None, auth: AuthConfig, client: str | None = None) -> AuthDecision:
    """OK if auth is disabled or the ``Authorization`` header carries valid credentials; THROTTLED
    when ``client`` (the peer address) spent its failed-check budget. Run it off any event loop."""
    if not auth.enabled:
        return AuthDecision.OK
    if not header_value:
        return AuthDecision.DENIED
    scheme, _, credentials = header_value.strip().partition(" ")
    scheme = scheme.lower()  # schemes are case-insensitive (RFC 9110)
    credentials = credentials.strip()
    if scheme == "bearer" and auth.bearer_token and credentials:
        # Comparing digests keeps the comparison constant-time even across lengths.
        given = hashlib.sha256(credentials.encode("utf-8", "surrogatepass")).digest()
        wanted = hashlib.sha256(auth.bearer_token.encode("utf-8")).digest()
        return AuthDecision.OK if hmac.compare_digest(given, wanted) else AuthDecision.DENIED
    if scheme == "basic" and auth.basic_users and credentials:
        return _check_basic(credentials, header_value, auth.basic_users, client or "")
    return AuthDecision.DENIED


def check_authorization(header_value: str | None, auth: AuthConfig, client: str | None = None) -> bool:
    """True if auth is disabled or the ``Authorization`` header carries valid credentials."""
    return authenticate(header_value, auth, client) is AuthDecision.OK


class AuthCollector(Collector):
    """The process's password checks and throttled clients, read at scrape time."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        checks = CounterMetricFamily("inferwatch_auth_password_checks", "Basic-auth password hashes computed "
                                     "(cached successes are not), by result: success, failure.", labels=["result"])
        checks.add_metric(["success"], hashes.success)
        checks.add_metric(["failure"], hashes.failure)
        yield checks
        budget = failure_budget
        yield CounterMetricFamily("inferwatch_auth_throttled", "Basic-auth checks refused with 429, without a "
                                  "hash, because the client address spent its failed-attempt budget "
                                  "(admin.failed_auth).", value=budget.refused)
        yield GaugeMetricFamily("inferwatch_auth_failure_budget_clients", "Client addresses with recent failed "
                                "basic-auth checks (at most admin.failed_auth.max_clients).", value=len(budget))


__all__ = ["hash_password", "verify_password", "check_authorization", "authenticate", "AuthDecision",
           "AuthCollector", "FailureBudget", "THROTTLED_BODY", "configure_failure_budget"]
