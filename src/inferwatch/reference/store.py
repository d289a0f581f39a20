"""The reference in use: loaded from ``reference.path`` or frozen from the first production events.

One owner for the three ways a monitor meets the reference: loading the file at start, the
warm-up (without a file, the first ``reference.warmup_events`` events of the main model
version become the reference) and hand-out (``current()``, read by the drift engine, the input
guard and the performance engine; ``status()`` for /v1/status). The warm-up is asked for by the
drift engine's thread (``try_warmup``), so it happens there, as soon as the events are in; the
store reads the main version's window through the callable it is given (this layer sits below
the pipeline, so it names only what it uses of a window: ``WarmupWindow``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import numpy as np

from inferwatch.config import ReferenceConfig
from inferwatch.ingest.values import PRESENT, Kind

from .builder import build_profile
from .format import ReferenceProfile, Role


class WarmupColumn(Protocol):
    """One column of a window snapshot (``pipeline.window.ColumnSnapshot``)."""

    @property
    def kind(self) -> Kind: ...
    @property
    def values(self) -> np.ndarray: ...
    @property
    def state(self) -> np.ndarray: ...
    def category_values(self) -> np.ndarray: ...


class WarmupSnapshot(Protocol):
    """A window snapshot (``pipeline.window.WindowSnapshot``): rows oldest first."""

    @property
    def n(self) -> int: ...
    @property
    def features(self) -> Mapping[str, WarmupColumn]: ...
    @property
    def outputs(self) -> Mapping[str, WarmupColumn]: ...


class WarmupWindow(Protocol):
    """The main version's window (``pipeline.window.Window``)."""

    @property
    def appended_total(self) -> int: ...
    def snapshot(self) -> WarmupSnapshot: ...


class ReferenceStore:
    """Loads, builds (warm-up) and hands out the one reference profile of the sidecar.

    ``type`` is "file" (``reference.path``, or a profile given), "warmup" or "none". The profile
    never changes once set, so readers on other threads need no lock.
    """

    def __init__(self, config: ReferenceConfig, *, main_version: str = "",
                 main_window: Callable[[], WarmupWindow | None] = lambda: None,
                 profile: ReferenceProfile | None = None):
        if profile is None and config.path:
            profile = ReferenceProfile.load(config.path)
        self.warmup_events = config.warmup_events
        self.main_version = main_version
        self.main_window = main_window
        self.type = "file" if profile is not None else ("warmup" if self.warmup_events else "none")
        self._profile = profile

    def current(self) -> ReferenceProfile | None:
        """The reference profile, or None until there is one."""
        return self._profile

    def warmup_collected(self) -> int:
        """Events of the main version collected toward the warm-up (all of them once it is done)."""
        if self._profile is not None:
            return self.warmup_events
        window = self.main_window()
        return 0 if window is None else min(window.appended_total, self.warmup_events)

    def try_warmup(self) -> ReferenceProfile | None:
        """Freeze the first ``warmup_events`` events of the main version's window as the reference.

        Returns the reference (the file's, or the warm-up's once enough events are in), or None.
        """
        if self._profile is not None or not self.warmup_events:
            return self._profile
        window = self.main_window()
        if window is None or window.appended_total < self.warmup_events:
            return None
        snapshot = window.snapshot()
        n = min(self.warmup_events, snapshot.n)
        if n < 2:
            return None
        columns: dict[Role, dict[str, Any]] = {"feature": {}, "output": {}}
        kinds: dict[str, Kind] = {}
        roles: tuple[tuple[Role, Mapping[str, WarmupColumn]], ...] = (
            ("feature", snapshot.features), ("output", snapshot.outputs))
        for role, group in roles:
            for name, col in group.items():
                kinds[name] = col.kind
                if col.kind == "numeric":
                    columns[role][name] = np.where(col.state[:n] == PRESENT, col.values[:n], np.nan)
                else:
                    columns[role][name] = list(col.category_values()[:n])
        self._profile = build_profile(columns, kinds, source=f"warmup:{self.main_version}:{n} events",
                                      sample_size=max(n, 2))
        return self._profile

    def status(self) -> dict[str, Any]:
        """The reference as /v1/status reports it (under ``drift.reference``)."""
        profile = self._profile
        reference: dict[str, Any] = {"type": self.type, "ready": profile is not None}
        if profile is not None:
            reference.update(hash=profile.hash, source=profile.source, rows=profile.rows,
                             created_at=profile.created_at, features=sorted(profile.features),
                             outputs=sorted(profile.outputs), memory_bytes=profile.memory_bytes())
        if self.type == "warmup":
            reference["warmup_events"] = self.warmup_events
            reference["warmup_collected"] = self.warmup_collected()
        return reference
