"""Alertmanager webhook notifications: the alerts in one, parsed and checked.

A notification is Alertmanager's webhook payload (version 4); :func:`parse_notification` returns
its alerts or raises :class:`NotificationError` with a reason (``invalid_json``,
``invalid_payload``: the receiver counts it) and what is wrong where.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from inferwatch.config.templates import TemplateError


class NotificationError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    status: str
    fingerprint: str
    starts_at: str
    generator_url: str

    def lookup(self, name: str) -> str:
        """A template placeholder's value; TemplateError when the alert has none."""
        scope, _, key = name.partition(".")
        if key and scope == "annotations":
            value = self.annotations.get(key)
        elif key and scope == "labels":
            value = self.labels.get(key)
        elif key:
            value = None
        else:
            value = {"fingerprint": self.fingerprint, "status": self.status, "startsAt": self.starts_at,
                     "generatorURL": self.generator_url}.get(name, self.labels.get(name))
        if value is None:
            raise TemplateError(f"the alert has no {name!r}")
        return value


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise NotificationError("invalid_payload", f"{where}: expected an object of strings")
    return value


def parse_notification(body: bytes) -> list[Alert]:
    """The alerts of an Alertmanager webhook notification (version 4); NotificationError says what and where."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotificationError("invalid_json", f"body: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise NotificationError("invalid_payload", "body: expected an Alertmanager webhook notification (an object)")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise NotificationError("invalid_payload", "alerts: expected a list")
    out = []
    for i, item in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(item, dict):
            raise NotificationError("invalid_payload", f"{where}: expected an object")
        labels = _strings(item.get("labels"), f"{where}.labels")
        if not labels:
            raise NotificationError("invalid_payload", f"{where}.labels: required")
        fingerprint = item.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            listing = json.dumps(sorted(labels.items())).encode()
            fingerprint = hashlib.sha256(listing).hexdigest()[:16]
        status = item.get("status", data.get("status", ""))
        out.append(Alert(labels, _strings(item.get("annotations"), f"{where}.annotations"),
                         status if isinstance(status, str) else "", fingerprint,
                         str(item.get("startsAt") or ""), str(item.get("generatorURL") or "")))
    return out
