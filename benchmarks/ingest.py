#!/usr/bin/env python
"""Push-mode ingestion: how many events per second reach the windows, and is memory bounded?

    .venv/bin/python benchmarks/ingest.py            # ~1-2 minutes
    .venv/bin/python benchmarks/ingest.py --quick    # fewer events

Events have 20 features (18 numeric, 2 categorical), a prediction, a prediction_id and a numeric
timestamp, and are sent in batches of 500 (``{"events": [...]}``, ~75 kB of JSON).

(a) In process, no HTTP: ``parse_events`` alone, ``Window.append`` alone, and the whole push
    path ``parse_events`` -> ``Pipeline.submit_batch`` -> worker -> window, drained.
(b) Over HTTP: ``python -m inferwatch run`` (proxy off) on loopback; ``--posters`` client
    processes POST pre-encoded bodies to /v1/events with keep-alive (429 answers are retried
    after a short pause and counted). Events/s is measured until every event is in a window
    (``appended_total`` in /v1/status). The sidecar's RSS (psutil) is read after 100k and after
    1M events, each time once the queue is empty.

(c) The input guard on vs off (target: on >= 70% of off): a reference profile of 10,000 events
    from the same generator (so ranges, categories and the outlier model are realistic) is the
    drift reference in both runs; only ``guard.enabled`` differs. In process, the real wiring
    (``Sidecar(cfg).pipeline``: drift bin counters, then the guard) parses, submits and drains
    the same bodies, and, in one thread without the queue, the CPU per event of parsing and of the
    worker with the guard off and on; over HTTP, a sidecar per mode takes ``--guard-events``
    events. On a shared machine events per CPU second are steadier than events per second.

This is a benchmark that prints figures, not a test: nothing here asserts the targets.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing as mp
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    HOST, Processes, SidecarProcess, install_signal_handlers, run_main, machine, median,
)

COUNTRIES = ["us", "de", "fr", "gb", "in", "br", "jp", "ca", "es", "it", "mx", "au"]
DEVICES = ["ios", "android", "web", "other"]
NUMERIC = [f"f{i}" for i in range(18)]


def make_events(n: int, seed: int, start: int = 0) -> list[dict]:
    rng = random.Random(seed)
    now = time.time()
    events = []
    for i in range(n):
        features = {name: round(rng.gauss(0, 1) * (10 ** (j % 4)), 4) for j, name in enumerate(NUMERIC)}
        features["country"] = rng.choice(COUNTRIES)
        features["device"] = rng.choice(DEVICES)
        events.append({
            "prediction_id": f"p{seed}-{start + i}",
            "timestamp": round(now - rng.random() * 60, 3),
            "features": features,
            "prediction": round(rng.random(), 4),
        })
    return events


def make_bodies(count: int, batch: int, seed: int = 1) -> list[bytes]:
    return [json.dumps({"events": make_events(batch, seed * 100_000 + k, k * batch)}).encode() for k in range(count)]


def rate(events: int, seconds: float) -> str:
    return f"{events / seconds:,.0f}" if seconds > 0 else "-"


# --- (a) in process ---------------------------------------------------------------------------


def in_process(args) -> list[tuple[str, float, float]]:
    """(what, events/s median, events/s best) rows."""
    from prometheus_client import CollectorRegistry

    from inferwatch.config import load_config
    from inferwatch.ingest.push import parse_events
    from inferwatch.exposition.metrics import Metrics
    from inferwatch.pipeline.worker import Pipeline
    from inferwatch.pipeline.window import Window, WindowStore

    bodies = make_bodies(args.inproc_batches, args.batch)
    n_events = len(bodies) * args.batch
    ct = "application/json"
    max_bytes = 16 * 1024 * 1024
    import orjson

    results: dict[str, list[float]] = {"json": [], "orjson": [], "parse": [], "append": [], "pipeline": []}
    for _ in range(args.repeat):
        for key, loads in (("json", json.loads), ("orjson", orjson.loads)):
            t = time.perf_counter()
            for body in bodies:
                loads(body)
            results[key].append(n_events / (time.perf_counter() - t))

        t = time.perf_counter()
        parsed = [parse_events(b, ct, max_bytes=max_bytes, default_version="1")[0][0] for b in bodies]
        results["parse"].append(n_events / (time.perf_counter() - t))

        window = Window("1", capacity=10_000, max_age_seconds=3600.0)
        t = time.perf_counter()
        for batch in parsed:
            window.append(batch)
        results["append"].append(n_events / (time.perf_counter() - t))

        cfg = load_config(None, {"model.name": "m", "model.version": "1"})
        metrics = Metrics("m", CollectorRegistry(), max_model_versions=8)
        windows = WindowStore(capacity=cfg.window.max_events, max_age_seconds=cfg.window.max_age_seconds,
                              max_versions=8)
        pipeline = Pipeline(cfg.model, metrics, windows, queue=cfg.queue, payload=cfg.payload, segments=cfg.segments)
        pipeline.start()
        try:
            version = metrics.version_label("1", "1")
            t = time.perf_counter()
            for body in bodies:
                for batch in parse_events(body, ct, max_bytes=max_bytes, default_version="1")[0]:
                    while not pipeline.submit_batch(version, batch):
                        time.sleep(0.001)
            pipeline.drain(60)
            results["pipeline"].append(n_events / (time.perf_counter() - t))
            assert windows.get(version).appended_total == n_events
        finally:
            pipeline.stop()
    return [
        ("json.loads only (stdlib, for scale)", median(results["json"]), max(results["json"])),
        ("orjson.loads only (the floor)", median(results["orjson"]), max(results["orjson"])),
        ("parse_events only", median(results["parse"]), max(results["parse"])),
        ("Window.append only", median(results["append"]), max(results["append"])),
        ("parse + submit_batch + worker, drained", median(results["pipeline"]), max(results["pipeline"])),
    ]


# --- (b) over HTTP ----------------------------------------------------------------------------


def poster(port: int, bodies: list[bytes], start: int, count: int, out: mp.Queue) -> None:
    """POST ``count`` bodies (cycling from ``start``); report accepted events and 429 retries."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler is inherited by fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent terminates us
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    accepted = retries = 0
    headers = {"Content-Type": "application/json"}
    try:
        for k in range(count):
            body = bodies[(start + k) % len(bodies)]
            while True:
                conn.request("POST", "/v1/events", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 429:
                    retries += 1
                    time.sleep(0.01)
                    continue
                if resp.status != 200:
                    raise RuntimeError(f"POST /v1/events: {resp.status} {data[:200]!r}")
                reply = json.loads(data)
                accepted += reply["accepted"]
                retries += 1 if reply["dropped"] else 0
                break
        out.put((accepted, retries, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put((accepted, retries, repr(exc)))
    finally:
        conn.close()


def post_events(sidecar: SidecarProcess, bodies: list[bytes], batch: int, events: int, posters: int,
                already: int) -> tuple[float, int, int]:
    """Post ``events`` events with ``posters`` processes; seconds until all are in the windows."""
    requests_total = events // batch
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    share = [requests_total // posters + (1 if i < requests_total % posters else 0) for i in range(posters)]
    procs = []
    t = time.perf_counter()
    offset = 0
    for i, count in enumerate(share):
        p = ctx.Process(target=poster, args=(sidecar.admin_port, bodies, offset, count, out), daemon=True)
        offset += count
        p.start()
        procs.append(p)
    accepted = retries = 0
    try:
        for _ in procs:
            a, r, err = out.get(timeout=600)
            if err:
                raise RuntimeError(f"poster failed: {err}")
            accepted += a
            retries += r
        target = already + accepted
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = sidecar.status()
            appended = sum(w["appended_total"] for w in status["windows"].values())
            if appended >= target and status["queue"]["depth"] == 0:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("events did not reach the windows within 300 s")
        seconds = time.perf_counter() - t
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
    return seconds, accepted, retries


def over_http(args, procs: Processes) -> list[str]:
    import psutil

    sidecar = SidecarProcess(procs, None, name="sidecar-ingest")
    proc = psutil.Process(sidecar.pid)
    bodies = make_bodies(args.http_bodies, args.batch, seed=2)
    rss_start = proc.memory_info().rss
    # Warm-up (allocations, vocabularies, imports) is part of the first 100k.
    lines = []
    marks = [(args.first, "first"), (args.total - args.first, "rest")]
    done = 0
    rss = {}
    rates = []
    total_retries = 0
    cpu = []
    for events, label in marks:
        cpu_before = sum(proc.cpu_times()[:2])
        seconds, accepted, retries = post_events(sidecar, bodies, args.batch, events, args.posters, done)
        cpu.append(sum(proc.cpu_times()[:2]) - cpu_before)
        done += accepted
        total_retries += retries
        rates.append((label, accepted, seconds))
        time.sleep(0.5)  # let the allocator settle before reading RSS
        rss[label] = proc.memory_info().rss
    status = sidecar.status()
    window = next(iter(status["windows"].values()))
    drops = ", ".join(f"{k}: {v:g}" for k, v in status["drops"].items()) or "none"
    fmt = "{:<44} {:>12} {:>12} {:>16}"
    lines.append(f"(b) over HTTP: POST /v1/events, {args.posters} posting processes, keep-alive")
    lines.append("    (the posters share the machine's CPUs with the sidecar; 'per sidecar CPU-s' is the")
    lines.append("    rate one fully used core would sustain)")
    lines.append(fmt.format("what", "events/s", "sidecar CPU", "per sidecar CPU-s"))
    for (label, accepted, seconds), used in zip(rates, cpu):
        what = f"events {0 if label == 'first' else args.first:,}-{args.first if label == 'first' else done:,}"
        lines.append(fmt.format(f"{what} ({seconds:.1f} s)", rate(accepted, seconds), f"{used / seconds:.2f} cores",
                                rate(accepted, used)))
    total_s = sum(s for _, _, s in rates)
    lines.append(fmt.format(f"all {done:,} events ({total_s:.1f} s)", rate(done, total_s),
                            f"{sum(cpu) / total_s:.2f} cores", rate(done, sum(cpu))))
    lines.append(f"429/dropped-and-retried requests: {total_retries}; sidecar drops: {drops}")
    lines.append("")
    growth = (rss["rest"] - rss["first"]) / rss["first"] * 100
    lines.append(f"sidecar RSS: at start {rss_start / 2**20:.1f} MiB, after {args.first:,} events "
                 f"{rss['first'] / 2**20:.1f} MiB, after {done:,} events {rss['rest'] / 2**20:.1f} MiB "
                 f"-> growth {growth:+.1f}%")
    lines.append(f"window: {window['events']:,} events (capacity {window['capacity']:,}), "
                 f"{window['memory_bytes'] / 2**20:.1f} MiB of columns, {len(window['features'])} features")
    return lines


# --- (c) the input guard on vs off ----------------------------------------------------------------


def reference_profile(path: Path) -> None:
    from inferwatch.ingest.events import rows_to_columns
    from inferwatch.reference import build_profile

    events = make_events(10_000, seed=7)
    columns = rows_to_columns([e["features"] for e in events])
    build_profile({"feature": columns, "output": {"prediction": [e["prediction"] for e in events]}}).save(path)


def guard_in_process(args, reference: Path) -> dict[bool, list[tuple[float, float]]]:
    """(events per wall second, events per CPU second of this process) per run and mode."""
    from prometheus_client import CollectorRegistry

    from inferwatch.config import load_config
    from inferwatch.ingest.push import parse_events
    from inferwatch.sidecar import Sidecar

    bodies = make_bodies(args.inproc_batches, args.batch, seed=3)
    n_events = len(bodies) * args.batch
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    schedule = [(True, False)]   # (guard, timed): an untimed warm-up run first (imports, allocations)
    for r in range(args.repeat):   # then both modes, in alternating order
        schedule += [(mode, True) for mode in ((False, True) if r % 2 == 0 else (True, False))]
    for guard, timed in schedule:
        sidecar = Sidecar(load_config(None, {"model.name": "m", "model.version": "1", "proxy.enabled": False,
                                             "reference.path": str(reference), "guard.enabled": guard}),
                          CollectorRegistry())
        pipeline = sidecar.pipeline
        pipeline.start()   # the worker only: no ports, no drift evaluation thread
        try:
            t, cpu = time.perf_counter(), time.process_time()
            for body in bodies:
                for batch in parse_events(body, "application/json", max_bytes=16 * 1024 * 1024,
                                          default_version="1")[0]:
                    while not pipeline.submit_batch("1", batch):
                        time.sleep(0.001)
            pipeline.drain(120)
            if timed:
                rates[guard].append((n_events / (time.perf_counter() - t), n_events / (time.process_time() - cpu)))
            assert sidecar.windows.get("1").appended_total == n_events
            assert (sidecar.guard is not None) == guard
        finally:
            pipeline.stop()
            sidecar.predlog.close()
    return rates


def guard_worker_cost(args, reference: Path) -> dict[str, float]:
    """CPU microseconds per event, one thread, no queue: parsing, and the worker with the guard
    off and on (``Pipeline.process`` on already parsed batches; best of ``--repeat``)."""
    from prometheus_client import CollectorRegistry

    from inferwatch.config import load_config
    from inferwatch.ingest.push import parse_events
    from inferwatch.pipeline.items import PushedBatch
    from inferwatch.sidecar import Sidecar

    bodies = make_bodies(args.inproc_batches, args.batch, seed=3)
    n_events = len(bodies) * args.batch
    cost = {"parse": math.inf, "off": math.inf, "on": math.inf}
    for _ in range(args.repeat):
        t = time.process_time()
        parsed = [b for body in bodies for b in parse_events(body, "application/json", max_bytes=16 * 1024 * 1024,
                                                                 default_version="1")[0]]
        cost["parse"] = min(cost["parse"], (time.process_time() - t) / n_events * 1e6)
        for mode in ("off", "on"):
            sidecar = Sidecar(load_config(None, {"model.name": "m", "model.version": "1", "proxy.enabled": False,
                                                 "reference.path": str(reference), "guard.enabled": mode == "on"}),
                              CollectorRegistry())
            for batch in parsed:   # the same batches for both modes: forget what the last run attached
                batch.converted = batch.annotations = None
            t = time.process_time()
            for batch in parsed:
                sidecar.pipeline.process(PushedBatch("1", batch))
            cost[mode] = min(cost[mode], (time.process_time() - t) / n_events * 1e6)
            sidecar.predlog.close()
    return cost


def guard_over_http(args, reference: Path) -> dict[bool, tuple[float, float, str]]:
    """Events per wall second and per CPU second of the sidecar, per mode: the medians of rounds
    run off, on, on, off, ... (a fresh sidecar each)."""
    import psutil

    bodies = make_bodies(args.http_bodies, args.batch, seed=4)
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    notes: dict[bool, str] = {False: "", True: ""}
    order = [mode for r in range(args.guard_rounds) for mode in ((False, True) if r % 2 == 0 else (True, False))]
    for guard in order:
        procs = Processes()
        try:
            sidecar = SidecarProcess(procs, None, name=f"sidecar-guard-{'on' if guard else 'off'}",
                                     extra_config=f"reference:\n  path: {reference}\n"
                                                  f"guard:\n  enabled: {'true' if guard else 'false'}\n")
            proc = psutil.Process(sidecar.pid)
            before = proc.cpu_times()
            seconds, accepted, _ = post_events(sidecar, bodies, args.batch, args.guard_events, args.posters, 0)
            after = proc.cpu_times()
            cpu = (after.user + after.system) - (before.user + before.system)
            issues = ""
            deadline = time.monotonic() + 10   # the guard runs right after the window append
            while guard:
                versions = (sidecar.status().get("guard") or {}).get("versions", {})
                events = {k: v for ver in versions.values() for k, v in ver["events"].items()}
                duplicates = sum(c for ver in versions.values() for k, c in ver["issues"].items()
                                 if k.endswith(":duplicate"))
                issues = (f"checked {sum(events.values()):,}, failed {events.get('failed', 0):,}; duplicates "
                          f"{duplicates:,}: the {args.http_bodies} bodies are sent again and again")
                if sum(events.values()) >= accepted or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            rates[guard].append((accepted / seconds, accepted / cpu))
            notes[guard] = issues
        finally:
            procs.close()
    return {mode: (median([r[0] for r in rates[mode]]), median([r[1] for r in rates[mode]]), notes[mode])
            for mode in (False, True)}


def guard_section(args) -> list[str]:
    import tempfile

    lines = ["(c) input guard on vs off (reference profile of 10,000 events; everything else equal)"]
    with tempfile.TemporaryDirectory(prefix="inferwatch-bench-guard-") as tmp:
        reference = Path(tmp) / "reference.json"
        reference_profile(reference)
        rates = guard_in_process(args, reference)
        wall = {mode: median([r[0] for r in rates[mode]]) for mode in (False, True)}
        cpu = {mode: median([r[1] for r in rates[mode]]) for mode in (False, True)}
        fmt = "{:<44} {:>12} {:>12} {:>14}"
        lines.append(fmt.format(f"in process, medians of {args.repeat}", "events/s", "(best)", "events/CPU-s"))
        for mode in (False, True):
            lines.append(fmt.format(f"parse + submit + worker, guard {'on' if mode else 'off'}", f"{wall[mode]:,.0f}",
                                    f"{max(r[0] for r in rates[mode]):,.0f}", f"{cpu[mode]:,.0f}"))
        lines.append(f"guard on / off: {wall[True] / wall[False]:.0%} of the throughput, {cpu[True] / cpu[False]:.0%} "
                     f"of the events per CPU second (target >= 70%)")
        cost = guard_worker_cost(args, reference)
        off, on = cost["parse"] + cost["off"], cost["parse"] + cost["on"]
        lines.append(f"CPU per event, one thread (best of {args.repeat}): parse {cost['parse']:.1f} us, worker "
                     f"{cost['off']:.1f} us with the guard off, {cost['on']:.1f} us on (the guard: "
                     f"{cost['on'] - cost['off']:.1f} us) -> parse + worker on / off: {off / on:.0%}")
        if not args.skip_http:
            http = guard_over_http(args, reference)
            lines.append(fmt.format(f"over HTTP, {args.guard_events:,} events, {args.posters} posters",
                                    "events/s", "", "events/CPU-s"))
            for mode in (False, True):
                lines.append(fmt.format(f"median of {args.guard_rounds} sidecars, guard {'on' if mode else 'off'}",
                                        f"{http[mode][0]:,.0f}", "", f"{http[mode][1]:,.0f}")
                             + (f"  ({http[mode][2]})" if http[mode][2] else ""))
            lines.append(f"guard on / off over HTTP: {http[True][0] / http[False][0]:.0%} of the throughput, "
                         f"{http[True][1] / http[False][1]:.0%} of the events per sidecar CPU second (target >= 70%)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer events: 200k over HTTP, 1 repeat")
    parser.add_argument("--batch", type=int, default=500, help="events per POST (default 500)")
    parser.add_argument("--posters", type=int, default=3, help="posting processes (default 3)")
    parser.add_argument("--first", type=int, default=100_000, help="events before the first RSS reading")
    parser.add_argument("--total", type=int, default=None, help="events in all (default 1,000,000; quick 200,000)")
    parser.add_argument("--repeat", type=int, default=None, help="in-process repeats (default 3; quick 1)")
    parser.add_argument("--inproc-batches", type=int, default=200, help="batches in the in-process runs")
    parser.add_argument("--http-bodies", type=int, default=40, help="distinct bodies the posters cycle through")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--guard-events", type=int, default=None,
                        help="events per sidecar in the guard on/off comparison over HTTP (default 300,000; quick 100,000)")
    parser.add_argument("--guard-rounds", type=int, default=None,
                        help="sidecars per mode in the guard comparison over HTTP (default 2; quick 1)")
    parser.add_argument("--skip-guard", action="store_true", help="leave out (c), the input guard on vs off")
    parser.add_argument("--only-guard", action="store_true", help="run only (c), the input guard on vs off")
    args = parser.parse_args(argv)
    args.total = args.total if args.total is not None else (200_000 if args.quick else 1_000_000)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    args.guard_rounds = args.guard_rounds if args.guard_rounds is not None else (1 if args.quick else 2)
    args.guard_events = args.guard_events if args.guard_events is not None else (100_000 if args.quick else 300_000)
    if args.total <= args.first:
        parser.error("--total must be larger than --first")

    install_signal_handlers()
    out = [f"machine: {machine()}", ""]
    if args.only_guard:
        print("\n".join(out + guard_section(args)))
        return 0
    rows = in_process(args)
    n = args.inproc_batches * args.batch
    out.append(f"(a) in process: {n:,} events (20 features: 18 numeric, 2 categorical) in batches of {args.batch}; "
               f"median (best) of {args.repeat}")
    out.append(f"{'what':<44} {'events/s':>12} {'(best)':>12}")
    for what, med, best in rows:
        out.append(f"{what:<44} {med:>12,.0f} {best:>12,.0f}")
    if not args.skip_http:
        procs = Processes()
        try:
            out += [""] + over_http(args, procs)
        finally:
            procs.close()
    if not args.skip_guard:
        out += [""] + guard_section(args)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    run_main(main)
