"""Comparing two reference profiles statistic by statistic (the merge and distributed tests)."""

from __future__ import annotations

import math
from typing import Any

# Running moments combined pairwise round differently from one pass (docs/reference-profile.md,
# "Profiles on a cluster"); every other number, the sample included, must be identical.
ROUNDED = {"mean", "std"}
REL = 1e-9
UNCOMPARED = {"created_at", "hash", "source"}


def assert_same_profile(a: Any, b: Any) -> None:
    _same(a.to_dict(), b.to_dict(), "profile")


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            if key not in UNCOMPARED:
                _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a} != {b}"
        elif where.rsplit(".", 1)[-1] in ROUNDED:
            assert math.isclose(a, b, rel_tol=REL, abs_tol=1e-12), f"{where}: {a} != {b}"
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
