"""Traffic for the demo: loan applications whose population drifts halfway through, with a burst
of outliers (a tenth of the applications absurdly large in three features, as a probing attacker or
a unit bug would send) and, near the end, a schema change (``income`` renamed ``annual_income``)."""

from __future__ import annotations

import threading
import time

import numpy as np
import requests

from .model import FEATURES, generate


class TrafficGenerator:
    def __init__(self, url: str, *, duration: float, concurrency: int = 4, rate_per_worker: float = 20.0,
                 drift_at: float = 0.5, outliers_at: float = 0.25, outliers_for: float = 0.1,
                 outlier_share: float = 0.1, rename_at: float = 0.8, seed: int = 11):
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

    def _instances(self, rows: int, rng: np.random.Generator) -> list[dict]:
        data = generate(rows, rng, shift=self.shift())
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
        return instances

    def _worker(self, index: int) -> None:
        rng = np.random.default_rng(self.seed + index)
        session = requests.Session()
        deadline = self.started + self.duration
        while not self._stop.is_set() and time.monotonic() < deadline:
            instances = self._instances(int(rng.integers(1, 5)), rng)
            try:
                response = session.post(self.url, json={"instances": instances}, timeout=10)
                self.sent += 1
                if response.status_code >= 400:
                    self.failed += 1
            except requests.RequestException:
                self.failed += 1
            self._stop.wait(self.interval)

    def start(self) -> "TrafficGenerator":
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(self.concurrency)]
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
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--loop", action="store_true", help="repeat rounds until stopped")
    args = parser.parse_args(argv)
    round_number = 0
    while True:
        round_number += 1
        traffic = TrafficGenerator(args.url, duration=args.duration, concurrency=args.concurrency,
                                   seed=11 + round_number).start()
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
