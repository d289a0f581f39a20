"""A webhook receiver for the compose stack: prints every Alertmanager notification it gets.

Run: ``python webhook-receiver.py --port 5001`` (standard library only). Each notification is one
line per alert, then the raw JSON when ``--json`` is given. ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def describe(notification: dict) -> list[str]:
    lines = [f"== {notification.get('receiver', '?')}: {notification.get('status', '?')} "
             f"({len(notification.get('alerts', []))} alert(s)), group {notification.get('groupLabels', {})}"]
    for alert in notification.get("alerts", []):
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        where = " ".join(f"{k}={labels[k]}" for k in ("model", "model_version", "instance") if k in labels)
        lines.append(f"   [{alert.get('status', '?')}] {labels.get('alertname', '?')} "
                     f"severity={labels.get('severity', '')} team={labels.get('team', '')} {where}".rstrip())
        if annotations.get("description"):
            lines.append(f"      {annotations['description']}")
        if annotations.get("runbook_url"):
            lines.append(f"      runbook: {annotations['runbook_url']}")
    return lines


class Handler(BaseHTTPRequestHandler):
    raw_json = False

    def log_message(self, *args):  # one line per notification is enough
        pass

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(200 if self.path == "/healthz" else 404, b"ok\n" if self.path == "/healthz" else b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            notification = json.loads(body)
        except ValueError:
            print(f"!! not JSON: {body[:200]!r}", flush=True)
            return self._answer(400)
        print("\n".join(describe(notification)), flush=True)
        if self.raw_json:
            print(json.dumps(notification, indent=2, sort_keys=True), flush=True)
        self._answer(200)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print Alertmanager webhook notifications")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--json", action="store_true", help="also print the raw JSON")
    args = parser.parse_args(argv)
    Handler.raw_json = args.json
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"webhook receiver on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
