#!/usr/bin/env python
"""Detection quality of the default drift decision, beside alibi-detect's TabularDrift decision.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/detection_quality.py --quick   # `make bench`: minutes
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/detection_quality.py           # the full run (docs/drift.md)

The full mode evaluates 600 stationary windows at 1k and 10k events: a 95% upper bound of 1% on
the false-alarm rate with at most one alarm (0 in 369 windows already bounds it at 1%). At the
default alpha's true rate (about 0.5%) the bound takes thousands of windows per size: run the
stationary rows alone for that (below; docs/drift.md has the runs and their length).

Three parts (``--parts``):

* ``synthetic``: 100 stationary features of mixed shapes (50 normal, 15 lognormal σ_log 1.4, 10
  zero-inflated with 60% zeros, 10 Poisson, 5 uniform, 9 categorical with 8 levels, one with 300
  levels), a 10k-row reference profile built by ``inferwatch.profile`` with default settings,
  windows of 1k, 10k and 100k events evaluated with the default ``drift:`` configuration. A cell
  is the share of windows in which ``inferwatch_dataset_drifted`` was 1, with a 95% (Clopper-
  Pearson) interval; for a change, how often the changed feature itself was named follows. The
  scenarios are ``_drift_scenarios.SCENARIOS``: stationary and one extreme value (false alarms),
  then one change each.
* ``streams``: a 10k window evaluated every 1k events; an abrupt mean shift of one feature starts
  at a random point between two evaluations; the delay is the number of evaluations after the
  shift until the feature is flagged.
* ``real``: datasets bundled with scikit-learn, bootstrapped into a 10k-row reference and windows
  (stationary), with feature 0 moved by 0.5σ, and with a covariate shift (rows re-weighted by
  exp(0.5·z) of feature 0, so its correlated features move with it).

The reference point, beside each cell: alibi-detect's ``TabularDrift`` decision at its defaults
(per-feature KS / chi-squared, Bonferroni at 0.05). alibi-detect brings 1.1 GB of dependencies,
so it is not in the project's environment: without it the benchmark uses the scipy reproduction in
``_tabular_reference.py``. To run the real one, in a venv of its own (never the project's .venv)::

    python3 -m venv /work/alibivenv && nice /work/alibivenv/bin/pip install -e . alibi-detect
    OPENBLAS_NUM_THREADS=1 /work/alibivenv/bin/python benchmarks/detection_quality.py ...

Then ``alibi_detect.cd.TabularDrift`` decides, the reproduction runs beside it on every window,
and the output ends with how often the two agree. The TD note under each table says which one ran.
``--no-reference`` leaves the reference point out.

The false-alarm bound: ``--scenarios stationary`` runs only the stationary rows and
``--also-alpha A`` also decides the same windows at a lower ``drift.alpha`` (cheaply: only the
windows flagged at the main alpha are evaluated again). ``--alpha`` sets ``drift.alpha`` itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _drift_scenarios import SCENARIOS, bootstrap, draw, profile_columns, real_datasets, snapshot  # noqa: E402
from _tabular_reference import TabularReference  # noqa: E402
from inferwatch.config import parse_config  # noqa: E402
from inferwatch.monitors.drift import Evaluator, PreparedReference  # noqa: E402
from inferwatch.reference import build_profile  # noqa: E402

FALSE_ALARM = {"stationary", "single extreme value (135,702 in a lognormal column)"}


def rate(k: int, n: int) -> str:
    """``share [95% interval] (k/n)``, the interval exact (Clopper-Pearson)."""
    if n == 0:
        return "—"
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{100 * k / n:.1f}% [{100 * ci.low:.1f}–{100 * ci.high:.1f}] ({k}/{n})"


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def evaluator_for(columns: dict, windows: list[int], alpha: float | None = None) -> Evaluator:
    profile = build_profile({"feature": columns})
    drift = {} if alpha is None else {"alpha": alpha}
    cfg = parse_config({"window": {"max_events": max(windows)}, "drift": drift}).drift
    return Evaluator(PreparedReference.build(profile), cfg)


# Every TabularReference made in this run, for the agreement of the reproduction with alibi-detect.
REFERENCES: list[TabularReference] = []


def reference_point(args, reference: dict[str, np.ndarray], categorical: set[str]) -> TabularReference | None:
    if args.no_reference:
        return None
    REFERENCES.append(TabularReference(reference, categorical))
    return REFERENCES[-1]


def trials_for(args, window: int, stationary: bool) -> int:
    n = args.stationary_trials if stationary else args.trials
    return max(3, n // args.large_divisor) if window >= 100_000 else n


def full_effect(result, name: str) -> float:
    column = next((c for c in result.features if c.name == name), None)
    return next((e.effect for e in column.evidence if e.view == "full"), np.nan) if column else np.nan


def synthetic(args, rng: np.random.Generator) -> None:
    ref_num, ref_cat = draw(args.reference, rng)
    ev = evaluator_for(profile_columns(ref_num, ref_cat), args.windows, args.alpha)
    tab = reference_point(args, {**ref_num, **ref_cat}, set(ref_cat))
    cfg = ev.cfg
    # --also-alpha: the same windows decided at a lower alpha. Its flags are a subset of the main
    # alpha's (the corrected tests at a lower level; effects and multivariate thresholds unchanged),
    # so only the windows the main decision flagged are evaluated again.
    also = None if args.also_alpha is None else Evaluator(ev.ref, dataclasses.replace(cfg, alpha=args.also_alpha))
    scenarios = {name: s for name, s in SCENARIOS.items()
                 if not args.scenarios or any(name.startswith(prefix) for prefix in args.scenarios)}
    print(f"\n## Synthetic: 100 features, reference {args.reference} rows; min_effect {cfg.min_effect}, "
          f"recent_events {cfg.recent_events}, {cfg.correction} at alpha {cfg.alpha}\n")
    cells: dict[str, list[str]] = {name: [] for name in scenarios}
    notes: list[str] = []
    for window in args.windows:
        for name, (changed, kwargs) in scenarios.items():
            trials = trials_for(args, window, name in FALSE_ALARM)
            ours = right = theirs = mv = ours_also = right_also = 0
            effects, corr = [], []
            start = time.perf_counter()
            for trial in range(1, trials + 1):
                if trial % 500 == 0:
                    log(f"  {window:>6} {name[:45]:<45} {trial}/{trials}: {ours} flagged"
                        + ("" if also is None else f", {ours_also} at alpha {args.also_alpha}")
                        + f"  [{time.perf_counter() - start:.0f}s]")
                num, cat = draw(window, rng, **kwargs)
                window_snapshot = snapshot(num, cat)
                result = ev.evaluate(window_snapshot)
                ours += result.dataset_drifted
                mv += any(result.multivariate_drifted.values())
                right += bool(changed) and any(c.drifted for c in result.features if c.name == changed)
                if also is not None and result.dataset_drifted:
                    again = also.evaluate(window_snapshot, multivariate=False)
                    ours_also += again.dataset_drifted
                    right_also += bool(changed) and any(c.drifted for c in again.features if c.name == changed)
                corr.append(result.correlation)
                if changed:
                    effects.append(full_effect(result, changed))
                else:
                    effects.append(max(e.effect / e.min_effect for c in result.features for e in c.evidence
                                       if e.view == "full" and e.min_effect > 0))
                if tab is not None:
                    theirs += tab.drifted({**num, **cat})
            cell = rate(ours, trials) + ("" if not changed else f", named {right}/{trials}")
            cell += f", MV {mv}/{trials}"
            if also is not None:
                cell += f"; at alpha {args.also_alpha}: {rate(ours_also, trials)}"
                cell += "" if not changed else f", named {right_also}/{trials}"
            cell += "" if args.no_reference else f" · TD {rate(theirs, trials)}"
            cells[name].append(cell)
            if changed:
                note = f"effect of {changed}: min {np.nanmin(effects):.3f}, median {np.nanmedian(effects):.3f}"
            else:
                note = f"largest full-window effect / min_effect {np.nanmax(effects):.2f}"
            notes.append(f"- {window // 1000}k, {name}: {note}; correlation drift median {np.nanmedian(corr):.2f} "
                         f"max {np.nanmax(corr):.2f}")
            log(f"  {window:>6} {name[:45]:<45} {cell}  [{time.perf_counter() - start:.0f}s]")
    print("| scenario | " + " | ".join(f"window {w // 1000}k" for w in args.windows) + " |")
    print("|---|" + "---|" * len(args.windows))
    for name in scenarios:
        kind = "false alarms" if name in FALSE_ALARM else "detected"
        print(f"| {kind}: {name} | " + " | ".join(cells[name]) + " |")
    print("\nA cell: the share of windows with inferwatch_dataset_drifted = 1 [95% interval]; for a change, in how "
          "many the changed feature itself drifted (named); MV: windows in which a multivariate decision "
          "(PCA reconstruction or correlation drift over its resampled threshold, inferwatch_multivariate_drifted) "
          "was 1.")
    if also is not None:
        print(f"\nat alpha {args.also_alpha}: the same windows decided with drift.alpha {args.also_alpha} "
              "(dataset-level, named; MV does not depend on alpha).")
    if tab is not None:
        print(f"\nTD: the TabularDrift decision (per-feature KS / chi-squared, Bonferroni at 0.05) on the same "
              f"windows, by {tab.label}.")
    print()
    print("\n".join(notes))


def streams(args, rng: np.random.Generator) -> None:
    window, step = 10_000, 1000
    ref_num, ref_cat = draw(args.reference, rng)
    ev = evaluator_for(profile_columns(ref_num, ref_cat), [window], args.alpha)
    tab = reference_point(args, {**ref_num, **ref_cat}, set(ref_cat))
    print(f"\n## Streams: a {window // 1000}k window evaluated every {step // 1000}k events, abrupt shift of n0 "
          f"starting at a random point between two evaluations; {args.streams} streams; {ev.cfg.correction} at "
          f"alpha {ev.cfg.alpha}" + ("" if tab is None else f"; TD: {tab.label}") + "\n")
    print("| shift | flagged within 2 evaluations | median delay (evaluations) | longest | TD within 2 | "
          "other features flagged |")
    print("|---|---|---|---|---|---|")
    for shift in (0.5, 0.25):
        delays, td_delays, others = [], [], 0
        for _ in range(args.streams):
            num, cat = draw(window, rng)
            cols = {**num, **cat}
            first = int(rng.integers(1, step + 1))      # shifted rows in the first interval
            found = td_found = 0
            for k in range(1, args.max_evaluations + 1):
                a, b = draw(step, rng)
                s, t = draw(step, rng, shift=shift)
                new = {name: (np.concatenate((v[:step - first], {**s, **t}[name][step - first:])) if k == 1
                              else {**s, **t}[name]) for name, v in {**a, **b}.items()}
                cols = {name: np.concatenate((cols[name], new[name]))[-window:] for name in cols}
                result = ev.evaluate(snapshot({k_: cols[k_] for k_ in num}, {k_: cols[k_] for k_ in cat}),
                                     multivariate=False)
                others += sum(c.drifted for c in result.features if c.name != "n0")
                if not found and any(c.drifted for c in result.features if c.name == "n0"):
                    found = k
                if tab is not None and not td_found and tab.drifted(cols):
                    td_found = k
                if found and (td_found or args.no_reference):
                    break
            delays.append(found or np.inf)
            td_delays.append(td_found or np.inf)
        d = np.array(delays)
        within = int(np.sum(d <= 2))
        td = "—" if args.no_reference else f"{int(np.sum(np.array(td_delays) <= 2))}/{args.streams}"
        longest = "never" if np.isinf(d.max()) else f"{int(d.max())}"
        print(f"| {shift}σ | {within}/{args.streams} | {np.median(d):.0f} | {longest} "
              f"(of {args.max_evaluations}) | {td} | {others} |")
        log(f"  stream shift {shift}: delays {sorted(delays)}")


def real(args, rng: np.random.Generator) -> None:
    windows = [w for w in args.windows if w <= 10_000]
    print(f"\n## Real datasets bundled with scikit-learn, bootstrapped (reference {args.reference} rows)\n")
    print("| dataset | case | " + " | ".join(f"window {w // 1000}k" for w in windows) + " |")
    print("|---|---|" + "---|" * len(windows))
    for name, data in real_datasets().items():
        ref = bootstrap(data, args.reference, rng)
        ev = evaluator_for(ref, windows, args.alpha)
        tab = reference_point(args, ref, set())
        for case, kwargs in (("stationary (false alarms)", {}), ("feature 0 +0.5σ", {"shift": 0.5}),
                             ("covariate shift, tilt 0.5", {"tilt": 0.5})):
            cells = []
            for window in windows:
                trials = args.real_trials if not kwargs else max(5, args.real_trials // 4)
                ours = theirs = 0
                for _ in range(trials):
                    cur = bootstrap(data, window, rng, **kwargs)
                    ours += ev.evaluate(snapshot(cur, {}), multivariate=False).dataset_drifted
                    if tab is not None:
                        theirs += tab.drifted(cur)
                cells.append(rate(ours, trials) + ("" if args.no_reference else f" · TD {rate(theirs, trials)}"))
            print(f"| {name} | {case} | " + " | ".join(cells) + " |")
            log(f"  {name} {case}: {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few evaluations (coarse rates, wide intervals)")
    parser.add_argument("--parts", default="synthetic,streams,real")
    parser.add_argument("--reference", type=int, default=10_000)
    parser.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10_000, 100_000])
    parser.add_argument("--trials", type=int, default=40, help="windows per detection cell")
    parser.add_argument("--stationary-trials", type=int, default=600, help="windows per false-alarm cell")
    parser.add_argument("--large-divisor", type=int, default=6, help="fewer windows at 100k events")
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--max-evaluations", type=int, default=10)
    parser.add_argument("--real-trials", type=int, default=200, help="stationary windows per real dataset cell")
    parser.add_argument("--no-reference", action="store_true", help="leave out the TabularDrift reference point")
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=[],
                        help="synthetic scenarios to run, by the start of their names (e.g. stationary); default all")
    parser.add_argument("--alpha", type=float, default=None, help="drift.alpha (default: the configuration's default)")
    parser.add_argument("--also-alpha", type=float, default=None,
                        help="synthetic: also decide the same windows at this lower drift.alpha")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.stationary_trials, args.large_divisor = 8, 30, 10
        args.streams, args.real_trials = 5, 20
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    parts = {"synthetic": synthetic, "streams": streams, "real": real}
    for part in args.parts.split(","):
        parts[part](args, rng)
    compared = [r for r in REFERENCES if r.detector is not None]
    if compared:
        agreed, total = sum(r.agreed for r in compared), sum(r.compared for r in compared)
        largest = max(r.largest_p_difference for r in compared)
        print(f"\nreproduction (_tabular_reference.py) agrees with alibi-detect {compared[0].version} TabularDrift "
              f"on {agreed}/{total} windows (largest difference of a feature's p-value {largest:.1e})")
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
