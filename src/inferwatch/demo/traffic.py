"""Traffic for the demo: loan applications whose population drifts halfway through, with a burst
of outliers (a tenth of the applications absurdly large in three features, as a probing attacker or
a unit bug would send) and, near the end, a schema change (``income`` renamed ``annual_income``);
and the applicants' outcomes (repaid or not) sent to the sidecar as delayed labels."""

from __future__ import annotations

import heapq
import os
import threading
import time

import numpy as np
import requests

from .model import FEATURES, generate, repayment_probability


class TrafficGenerator:
    """``labels_url`` (the sidecar's ``/v1/labels``): each row's outcome is drawn from the demo's
    ground truth and posted ``label_delay`` seconds (uniform between the two) after the prediction,
    with ``labels_token`` as its bearer token when the sidecar's ``admin.write_auth`` asks for one."""

    def __init__(self, url: str, *, duration: float, concurrency: int = 4, rate_per_worker: float = 20.0,
                 drift_at: float = 0.5, outliers_at: float = 0.25, outliers_for: float = 0.1,
                 outlier_share: float = 0.1, rename_at: float = 0.7, seed: int = 11, labels_url: str | None = None,
                 label_delay: tuple[float, float] = (2.0, 8.0), labels_token: str = ""):
        self.url = url
        self.duration = duration
        self.outliers_at, self.outliers_for, self.outlier_share = outliers_at, outliers_for, outlier_share
        self.rename_at = rename_at
        self.concurrency = concurrency
        self.interval = 1.0 / rate_per_worker
        self.drift_at = drift_at
        self.seed = seed
        self.sent = 0
        self.failed = 0
        self.started = 0.0
        self.labels_url = labels_url
        self.labels_token = labels_token
        self.label_delay = label_delay
        self.labels_sent = 0
        self._due: list[tuple[float, str, str]] = []  # a heap of (due time, prediction id, label)
        self._due_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def shift(self) -> float:
        """0 before the drift point, then ramping to 1 over a tenth of the run."""
        progress = (time.monotonic() - self.started) / self.duration
        return float(np.clip((progress - self.drift_at) * 10, 0.0, 1.0))

    def progress(self) -> float:
        return (time.monotonic() - self.started) / self.duration

    def phase(self) -> str:
        """What the traffic injects now: outliers, a renamed column, or nothing."""
        p = self.progress()
        if self.outliers_at <= p < self.outliers_at + self.outliers_for:
            return "outliers"
        return "renamed" if p >= self.rename_at else "-"

    def _instances(self, rows: int, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
        """The rows to send, and each applicant's chance to repay (the truth, before any tampering)."""
        data = generate(rows, rng, shift=self.shift())
        repaid = repayment_probability(data)
        phase = self.phase()
        if phase == "outliers":
            odd = rng.random(rows) < self.outlier_share
            data["income"] = np.where(odd, data["income"] * 40, data["income"])
            data["loan_amount"] = np.where(odd, data["loan_amount"] * 40, data["loan_amount"])
            data["credit_history_years"] = np.where(odd, 49.0, data["credit_history_years"])
        instances = [{name: (data[name][i].item() if hasattr(data[name][i], "item") else data[name][i])
                      for name in FEATURES} for i in range(rows)]
        if phase == "renamed":  # an upstream release renamed a column
            for row in instances:
                row["annual_income"] = row.pop("income")
        return instances, repaid

    def _worker(self, index: int) -> None:
        rng = np.random.default_rng(self.seed + index)
        session = requests.Session()
        deadline = self.started + self.duration
        while not self._stop.is_set() and time.monotonic() < deadline:
            rows = int(rng.integers(1, 5))
            instances, chance = self._instances(rows, rng)
            prediction_id = f"s{self.seed}-w{index}-{self.sent}-{int(rng.integers(1 << 30))}"
            try:
                response = session.post(self.url, json={"instances": instances}, timeout=10,
                                        headers={"X-Prediction-ID": prediction_id})
                self.sent += 1
                if response.status_code >= 400:
                    self.failed += 1
                elif self.labels_url:
                    self._schedule_labels(prediction_id, chance, rng)
            except requests.RequestException:
                self.failed += 1
            self._stop.wait(self.interval)

    def _schedule_labels(self, prediction_id: str, chance: np.ndarray, rng: np.random.Generator) -> None:
        rows = len(chance)
        repaid = rng.random(rows) < chance
        due = time.monotonic() + rng.uniform(*self.label_delay)
        ids = [prediction_id] if rows == 1 else [f"{prediction_id}-{i}" for i in range(rows)]
        with self._due_lock:
            for pid, ok in zip(ids, repaid):
                heapq.heappush(self._due, (due, pid, "approve" if ok else "refer"))

    def _send_labels(self, url: str) -> None:
        session = requests.Session()
        if self.labels_token:
            session.headers["Authorization"] = f"Bearer {self.labels_token}"
        while True:
            stopping = self._stop.wait(0.5) or not any(t.is_alive() for t in self._threads[:-1])
            now = time.monotonic()
            batch = []
            with self._due_lock:
                while self._due and (stopping or self._due[0][0] <= now):
                    _, pid, label = heapq.heappop(self._due)
                    batch.append({"prediction_id": pid, "label": label})
            if batch:
                try:
                    session.post(url, json={"labels": batch}, timeout=10)
                    self.labels_sent += len(batch)
                except requests.RequestException:
                    pass
            if stopping and not self._due:
                return

    def start(self) -> "TrafficGenerator":
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.concurrency)]
        if self.labels_url:  # the last thread: delayed labels (due times are not in order across workers)
            self._threads.append(threading.Thread(target=self._send_labels, args=(self.labels_url,), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


def main(argv: list[str] | None = None) -> int:
    """``python -m inferwatch.demo.traffic --url URL``: rounds of drifting traffic (compose stack)."""
    import argparse

    parser = argparse.ArgumentParser(description="inferwatch demo traffic: loan applications that drift")
    parser.add_argument("--url", required=True, help="prediction URL, e.g. http://inferwatch:8080/v1/models/loan:predict")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per round (drift halfway)")
    parser.add_argument("--outliers-at", type=float, default=0.25, metavar="SHARE",
                        help="when the burst of outliers starts, as a share of the round (default 0.25)")
    parser.add_argument("--outliers-for", type=float, default=0.1, metavar="SHARE",
                        help="how long it lasts, as a share of the round (default 0.1)")
    parser.add_argument("--rename-at", type=float, default=0.7, metavar="SHARE",
                        help="when `income` is renamed `annual_income` until the round ends (default 0.7)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--loop", action="store_true", help="repeat rounds until stopped")
    parser.add_argument("--labels-url", help="the sidecar's /v1/labels: send each row's outcome a few seconds later")
    parser.add_argument("--labels-token-env", default="INFERWATCH_WRITE_TOKEN", metavar="NAME",
                        help="environment variable holding the bearer token of the sidecar's admin.write_auth "
                             "(default INFERWATCH_WRITE_TOKEN; unset: no token)")
    args = parser.parse_args(argv)
    if not 0 <= args.outliers_at <= args.outliers_at + args.outliers_for <= 1 or not 0 <= args.rename_at <= 1:
        parser.error("--outliers-at, --outliers-for and --rename-at are shares of the round: 0 to 1")
    round_number = 0
    while True:
        round_number += 1
        traffic = TrafficGenerator(args.url, duration=args.duration, concurrency=args.concurrency,
                                   outliers_at=args.outliers_at, outliers_for=args.outliers_for,
                                   rename_at=args.rename_at, seed=11 + round_number,
                                   labels_url=args.labels_url,
                                   labels_token=os.environ.get(args.labels_token_env, "")).start()
        try:
            while traffic.running():
                time.sleep(1)
        except KeyboardInterrupt:
            traffic.stop()
            return 130
        traffic.stop()
        print(f"round {round_number}: {traffic.sent} requests sent, {traffic.failed} failed", flush=True)
        if not args.loop:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
