"""The set of values a reference column held, in bounded memory, and the test of new values.

``SeenValues`` remembers every category key of a column: exactly (a set) up to ``exact_max``
distinct keys, then in a Bloom filter of ``bloom_bits`` bits (a power of two) probed by
``bloom_hashes`` positions, whose false-positive rate is read off its own fill
(``fill ** hashes``). Two sets built with the same settings merge (union of the exact sets up
to the cap, OR of the filters), so profiles built in parts combine. At freeze time a filter is
folded (its two halves OR-ed, which is exact because positions are taken modulo a power of two)
while its false-positive rate stays under ``target_fpr``: a column with 20,000 values does not
carry the bits sized for a million.

Keys are hashed vectorised: the UTF-8 bytes of every distinct key are walked position by
position across all keys at once (FNV-1a 64, then the splitmix64 finaliser), so a window's
distinct values are hashed once with no per-value Python arithmetic. ``unseen_test`` is the
decision: a one-sided binomial test of the window's count of new values against the rate of
new values expected from the reference itself (Good-Turing, docs/drift.md).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats as sps

__all__ = ["SeenValues", "hash_keys", "expected_unseen_rate", "unseen_test",
           "DEFAULT_EXACT_MAX", "DEFAULT_BLOOM_BITS", "DEFAULT_BLOOM_HASHES", "DEFAULT_TARGET_FPR"]

DEFAULT_EXACT_MAX = 10_000
# 2**23 bits (1 MiB while building) with 10 probes: a false-positive rate of 0.1% up to about
# 580,000 distinct values; more values raise the rate, which the profile records.
DEFAULT_BLOOM_BITS = 1 << 23
DEFAULT_BLOOM_HASHES = 10
DEFAULT_TARGET_FPR = 0.001
_MIN_BITS = 1 << 10

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SECOND = np.uint64(0x9E3779B97F4A7C15)  # the second hash: the golden-ratio constant, re-mixed


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit (FNV's low bits are weak)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_keys(keys: Sequence[str]) -> np.ndarray:
    """64-bit hashes of category keys (FNV-1a over UTF-8, mixed), vectorised across the keys.

    The loop runs over byte positions (the longest key's length), each step one numpy operation
    on the keys at least that long.
    """
    n = len(keys)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    encoded = [k.encode("utf-8", "surrogatepass") for k in keys]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    order = np.argsort(-lengths, kind="stable")  # longest first: the keys still running are a prefix
    lengths, starts = lengths[order], starts[order]
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    longest = int(lengths[0])
    running = n
    for pos in range(longest):
        while running and lengths[running - 1] <= pos:
            running -= 1
        h[:running] ^= buf[starts[:running] + pos].astype(np.uint64)
        h[:running] *= _FNV_PRIME
    out = np.empty(n, dtype=np.uint64)
    out[order] = _mix(h)
    return out


def _positions(hashes: np.ndarray, n_hashes: int, bits: int) -> np.ndarray:
    """(keys x probes) bit positions by double hashing: (h1 + i * h2) mod bits."""
    h2 = _mix(hashes ^ _SECOND) | np.uint64(1)
    i = np.arange(n_hashes, dtype=np.uint64)
    return (hashes[:, None] + i[None, :] * h2[:, None]) & np.uint64(bits - 1)


@dataclass
class SeenValues:
    """Every distinct key of a column: exact up to ``exact_max``, then a Bloom filter."""

    exact_max: int = DEFAULT_EXACT_MAX
    bloom_bits: int = DEFAULT_BLOOM_BITS
    bloom_hashes: int = DEFAULT_BLOOM_HASHES
    exact: set[str] | None = field(default_factory=set)  # None once the filter took over
    bits: np.ndarray | None = None  # while a filter: bloom_bits bits packed into uint8, little bit order
    _sorted_hashes: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.bloom_bits < 2 or self.bloom_bits & (self.bloom_bits - 1):
            raise ValueError(f"bloom_bits must be a power of two, got {self.bloom_bits}")

    @property
    def is_exact(self) -> bool:
        return self.exact is not None

    def add(self, keys: Iterable[str]) -> None:
        """Add distinct keys (a chunk's, already counted once each)."""
        if self.exact is not None:
            self.exact.update(keys)
            self._sorted_hashes = None
            if len(self.exact) > self.exact_max:
                self._to_bloom()
            return
        self._set(hash_keys(list(keys)))

    def _to_bloom(self) -> None:
        assert self.exact is not None
        keys = list(self.exact)
        self.exact = None
        self.bits = np.zeros(self.bloom_bits // 8, dtype=np.uint8)
        self._set(hash_keys(keys))

    @property
    def n_bits(self) -> int:
        return 0 if self.bits is None else int(self.bits.size) * 8

    def _set(self, hashes: np.ndarray) -> None:
        assert self.bits is not None
        if hashes.size:
            pos = _positions(hashes, self.bloom_hashes, self.n_bits).ravel()
            if pos.size < self.bits.size // 64:  # a few keys: set their bits in place
                masks = np.left_shift(1, pos & np.uint64(7)).astype(np.uint8)
                np.bitwise_or.at(self.bits, (pos >> np.uint64(3)).astype(np.intp), masks)
            else:  # many: one scatter into the unpacked bits (a bool per bit, briefly) beats sorting
                unpacked = np.unpackbits(self.bits, bitorder="little").view(bool)
                unpacked[pos] = True
                self.bits = np.packbits(unpacked, bitorder="little")

    def _fill(self, bits: np.ndarray) -> float:
        return float(np.unpackbits(bits).mean())

    def merge(self, other: SeenValues) -> None:
        """Union with ``other`` (same settings): exact sets by union up to the cap, filters by OR."""
        if (other.bloom_hashes, other.exact_max) != (self.bloom_hashes, self.exact_max):
            raise ValueError("cannot merge seen-value sets built with different settings")
        if other.exact is not None:
            self.add(other.exact)
            return
        assert other.bits is not None
        if self.exact is not None:
            keys = self.exact
            self.exact, self.bits = None, other.bits.copy()
            self._set(hash_keys(list(keys)))
            return
        assert self.bits is not None
        a, b = _fold_to(self.bits, min(self.bits.size, other.bits.size)), \
            _fold_to(other.bits, min(self.bits.size, other.bits.size))
        self.bits = a | b

    def fold(self, target_fpr: float = DEFAULT_TARGET_FPR) -> None:
        """Halve the filter while its false-positive rate stays at most ``target_fpr``."""
        if self.bits is None:
            return
        while self.n_bits > _MIN_BITS:
            half = self.bits.size // 2
            folded = self.bits[:half] | self.bits[half:]
            if self._fill(folded) ** self.bloom_hashes > target_fpr:
                break
            self.bits = folded

    @property
    def false_positive_rate(self) -> float:
        """The chance a key never added is reported seen: 0 while exact, else fill ** hashes."""
        if self.bits is None:
            return 0.0
        return self._fill(self.bits) ** self.bloom_hashes

    def contains_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hashed key (``hash_keys``) was seen (a Bloom filter may say yes wrongly)."""
        if self.exact is not None:
            if self._sorted_hashes is None:
                self._sorted_hashes = np.sort(hash_keys(sorted(self.exact)))
            ref = self._sorted_hashes
            if ref.size == 0:
                return np.zeros(hashes.size, dtype=bool)
            at = np.minimum(np.searchsorted(ref, hashes), ref.size - 1)
            return ref[at] == hashes
        assert self.bits is not None
        if hashes.size == 0:
            return np.zeros(0, dtype=bool)
        pos = _positions(hashes, self.bloom_hashes, self.n_bits)
        return ((self.bits[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1).all(axis=1)

    def contains(self, keys: Sequence[str]) -> np.ndarray:
        return self.contains_hashes(hash_keys(keys))

    # --- the profile's JSON --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        if self.exact is not None:
            return {"exact": sorted(self.exact)}
        assert self.bits is not None
        return {"bloom": {"bits": self.n_bits, "hashes": self.bloom_hashes,
                          "hash": "fnv1a64-splitmix64", "encoding": "base64-bits-little",
                          "data": base64.b64encode(self.bits.tobytes()).decode("ascii"),
                          "false_positive_rate": self.false_positive_rate}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeenValues:
        if "exact" in data:
            keys = {str(k) for k in data["exact"]}
            return cls(exact_max=max(DEFAULT_EXACT_MAX, len(keys)), exact=keys)
        bloom = data["bloom"]
        if bloom.get("hash") != "fnv1a64-splitmix64" or bloom.get("encoding") != "base64-bits-little":
            raise ValueError(f"unknown Bloom filter hash or encoding {bloom.get('hash')!r}/{bloom.get('encoding')!r}")
        size = int(bloom["bits"])
        bits = np.frombuffer(base64.b64decode(bloom["data"]), dtype=np.uint8).copy()
        if bits.size * 8 != size or size < 8 or size & (size - 1):
            raise ValueError(f"Bloom filter data holds {bits.size * 8} bits, expected {size} (a power of two)")
        return cls(bloom_bits=size, bloom_hashes=int(bloom["hashes"]), exact=None, bits=bits)

    def memory_bytes(self) -> int:
        if self.bits is not None:
            return int(self.bits.size)
        return sum(len(k) + 8 for k in self.exact or ())


def _fold_to(bits: np.ndarray, size: int) -> np.ndarray:
    while bits.size > size:
        half = bits.size // 2
        bits = bits[:half] | bits[half:]
    return bits


def expected_unseen_rate(singletons: int, total: int) -> float:
    """The chance that the next value is one the reference never held (Good-Turing: the share of
    values seen exactly once), with one pseudo-singleton so a reference without any still allows
    new values now and then. NaN for an empty reference."""
    if total <= 0:
        return math.nan
    return min(1.0, (singletons + 1) / (total + 1))


def unseen_test(unseen: int, n: int, expected_rate: float) -> float:
    """p-value of seeing at least ``unseen`` new values among ``n`` when each is new with
    ``expected_rate`` (one-sided binomial: only more new values than expected is drift)."""
    if n <= 0 or not math.isfinite(expected_rate):
        return math.nan
    if unseen <= 0:
        return 1.0
    return float(sps.binom.sf(unseen - 1, n, min(max(expected_rate, 0.0), 1.0)))
