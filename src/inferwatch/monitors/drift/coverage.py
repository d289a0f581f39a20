"""Reference columns the traffic never brings: a silent mismatch made visible.

A reference profiled with ``--prediction-column score`` and traffic whose scalar prediction is
``prediction`` give no prediction drift at all, and nothing says why; the same for a feature
named differently in the training data and in the payloads. The drift engine feeds every
windowed batch's column names here; once ``min_events`` events arrived (as many as a drift
evaluation needs), reference columns never seen while other columns were are a mismatch: logged
once, shown in ``/v1/status`` (``drift.columns``), counted by a gauge.
"""

from __future__ import annotations

import difflib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterable

log = logging.getLogger(__name__)

#: Traffic column names remembered beyond the reference's (a client sending random keys cannot
#: grow memory); the ones past the cap are counted, not named.
MAX_SEEN_NAMES = 256
#: Names listed in a message or the status.
MAX_LISTED = 20


@dataclass(frozen=True)
class Mismatch:
    """Reference columns of one kind (``feature`` or ``output``) absent from traffic that had others."""

    kind: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def hints(self) -> list[str]:
        """How to make the names agree, naming the likely pair where one is close (or the only one)."""
        hints = []
        for name in self.missing:
            close = difflib.get_close_matches(name, self.unexpected, n=1, cutoff=0.5)
            if not close and len(self.missing) == 1 and len(self.unexpected) == 1:
                close = list(self.unexpected)
            if not close:
                continue
            if self.kind == "output":
                hints.append(f"profile the reference with `--prediction-column {name}={close[0]}` (the traffic "
                             f"calls the output {close[0]!r})")
            else:
                hints.append(f"rename the reference column {name!r} to {close[0]!r} (the payloads' name) and "
                             f"profile it again, or rename the payload's feature")
        if not hints:
            hints.append("profile the reference with the names the traffic uses (`--prediction-column COL=OUTPUT` "
                         "for outputs; docs/reference-profile.md)")
        return hints

    def message(self) -> str:
        return (f"reference {self.kind}s never seen in traffic: {', '.join(self.missing)}; the traffic's "
                f"{self.kind}s not in the reference: {', '.join(self.unexpected) or 'none'}. Their drift is "
                f"not evaluated: {'; '.join(self.hints())}")

    def summary(self) -> dict[str, Any]:
        return {"missing": list(self.missing), "unexpected": list(self.unexpected), "hints": self.hints()}


def find_mismatch(kind: str, reference: Iterable[str], seen: Iterable[str]) -> Mismatch | None:
    """Reference names never seen while some traffic names were (pure; None: nothing to say).

    Traffic with none of this kind at all (no outputs: push-only features) is no mismatch of names.
    """
    reference, seen = set(reference), set(seen)
    missing = reference - seen
    if not missing or not seen:
        return None
    return Mismatch(kind, tuple(sorted(missing))[:MAX_LISTED], tuple(sorted(seen - reference))[:MAX_LISTED])


class ColumnCoverage:
    """Which reference columns the traffic brings (``observe``: the worker thread; the rest: any thread)."""

    def __init__(self, features: Iterable[str], outputs: Iterable[str], min_events: int):
        self.reference = {"feature": frozenset(features), "output": frozenset(outputs)}
        self.min_events = max(int(min_events), 1)
        self.events = 0
        self.seen: dict[str, set[str]] = {"feature": set(), "output": set()}
        self.names_over_cap = 0
        self._logged: set[tuple[str, tuple[str, ...]]] = set()
        self._lock = threading.Lock()

    def observe(self, features: Iterable[str], outputs: Iterable[str], n: int) -> None:
        """Count ``n`` events whose batch had these columns (with at least one value each)."""
        changed = False
        with self._lock:
            crossed = self.events < self.min_events <= self.events + n
            self.events += n
            for kind, names in (("feature", features), ("output", outputs)):
                seen = self.seen[kind]
                for name in names:
                    if name in seen:
                        continue
                    if name in self.reference[kind] or sum(map(len, self.seen.values())) < MAX_SEEN_NAMES:
                        seen.add(name)
                        changed = True
                    else:
                        self.names_over_cap += 1
        if crossed or (changed and self.events >= self.min_events):
            self._log_new()

    def mismatches(self) -> list[Mismatch]:
        if self.events < self.min_events:
            return []
        with self._lock:
            seen = {kind: set(names) for kind, names in self.seen.items()}
        found = (find_mismatch(kind, self.reference[kind], seen[kind]) for kind in ("feature", "output"))
        return [m for m in found if m is not None]

    def unseen(self, kind: str) -> int:
        """Reference columns of ``kind`` never seen while others were (0 before ``min_events``)."""
        with self._lock:
            seen = set(self.seen[kind])
        if self.events < self.min_events or not seen:
            return 0
        return len(self.reference[kind] - seen)

    def _log_new(self) -> None:
        for mismatch in self.mismatches():
            key = (mismatch.kind, mismatch.missing)
            if key not in self._logged:
                self._logged.add(key)
                log.warning("%s", mismatch.message())

    def status(self) -> dict[str, Any]:
        return {"events": self.events, "checked_after_events": self.min_events,
                "mismatches": {m.kind: m.summary() for m in self.mismatches()}}
