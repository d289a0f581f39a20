"""Job health: run a command (or a block of Python) and push how it went to a Prometheus Pushgateway.

``inferwatch job --name NAME -- COMMAND ...`` runs COMMAND with its stdin, stdout and stderr
inherited (output passes through byte for byte), forwards SIGTERM/SIGINT/SIGHUP to it, and exits
with its exit code. Around the run it pushes ``inferwatch_job_*`` to the Pushgateway, grouped by
``job`` (the job's name) and ``instance`` (default: the host name):

- at the start (POST, so the rest of the group stays): ``running`` 1, the start time, the
  schedule lateness when ``--schedule-timestamp`` is given, the environment's info metric and the
  per-job alert overrides;
- at the end: ``running`` 0, end time, duration, exit code, the last success or the last failure
  time, and the run and failure counters.

The Pushgateway never sums: a push replaces the metrics of the same name in the group. So the
counters are read back from the Pushgateway (``/api/v1/metrics``) at the end of a run, incremented
and pushed (POST). The last success time is only pushed by a successful run, so a failed run
leaves the previous success in place. Two concurrent runs with the same ``job`` and ``instance``
can lose an increment (use a distinct ``--instance``); a Pushgateway restarted without
persistence restarts the counters at 0, which Prometheus's ``rate``/``increase`` read as a reset.

Monitoring never fails the job: when the Pushgateway is unreachable (or answers an error) one line
on stderr per run says so (the first failure; later ones in the same run add nothing) and the
command's exit code is returned unchanged. When only the read-back of
the counters fails, the result is pushed without them (they keep their last values).

``JobRun`` is the same as a context manager, and ``monitored_job`` as a decorator, for Python code.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator, TextIO, TypeVar
from urllib.error import HTTPError, URLError

import requests
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import pushadd_to_gateway

from inferwatch import __version__

TEAMS = ("ml", "data")
# Packages whose versions label inferwatch_job_info when installed (a changed label = dependency drift).
DEFAULT_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "torch", "tensorflow", "xgboost", "lightgbm",
                    "pyarrow")
# Signals passed on to the child: a supervisor's stop (TERM), Ctrl-C or kill -INT (INT), a hangup.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
ENV_PUSHGATEWAY = "INFERWATCH_PUSHGATEWAY"
DEFAULT_PUSHGATEWAY = "http://127.0.0.1:9091"
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class JobOptions:
    name: str
    pushgateway: str = ""                  # default: $INFERWATCH_PUSHGATEWAY or DEFAULT_PUSHGATEWAY
    instance: str = ""                     # default: the host name
    team: str = "ml"                       # the `team` label: who gets this job's alerts (ml or data)
    model: str = ""                        # the model the job is for (the `model` label), optional
    schedule_timestamp: float | None = None  # when the run was scheduled (Unix time): lateness
    max_age_seconds: float | None = None   # per-job override of InferwatchJobNotSucceededRecently's max age
    max_duration_seconds: float | None = None  # per-job override of InferwatchJobDurationHigh's threshold
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    timeout_seconds: float = 5.0           # per Pushgateway request

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not self.name.strip():
            problems.append("name: must not be empty")
        if self.team not in TEAMS:
            problems.append(f"team: must be one of {', '.join(TEAMS)}, got {self.team!r}")
        for key in ("max_age_seconds", "max_duration_seconds", "timeout_seconds"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                problems.append(f"{key}: must be greater than 0, got {value!r}")
        self.pushgateway = (self.pushgateway or os.environ.get(ENV_PUSHGATEWAY) or DEFAULT_PUSHGATEWAY).rstrip("/")
        if not re.match(r"^https?://[^/]", self.pushgateway):
            problems.append(f"pushgateway: expected an http(s) URL, got {self.pushgateway!r}")
        self.instance = self.instance or socket.gethostname()
        if problems:
            raise ValueError("; ".join(problems))


def environment_labels(packages: tuple[str, ...] = DEFAULT_PACKAGES) -> dict[str, str]:
    """The labels of inferwatch_job_info: Python, inferwatch, each installed package of ``packages``
    (label = the name with non-alphanumerics as ``_``), and a hash of every installed distribution."""
    labels = {"python_version": platform.python_version(),
              "python_implementation": platform.python_implementation(),
              "inferwatch_version": __version__}
    installed: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.name  # metadata["Name"]: None for a broken installation
        if name:
            installed[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    for package in packages:
        version = installed.get(re.sub(r"[-_.]+", "-", package).lower())
        if version is not None:
            labels[_LABEL_NAME.sub("_", package).lower()] = version
    listing = "\n".join(f"{name}=={version}" for name, version in sorted(installed.items()))
    labels["environment_hash"] = hashlib.sha256(listing.encode()).hexdigest()[:12]
    return labels


class _Families:
    """A one-shot collector: the families of one push."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class Pushgateway:
    """One group (job, instance) of a Pushgateway: read its counters back, push (POST) families."""

    def __init__(self, url: str, job: str, instance: str, timeout: float):
        self.url, self.job, self.instance, self.timeout = url, job, instance, timeout

    def push(self, families: list[Metric]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        pushadd_to_gateway(self.url, job=self.job, registry=registry, grouping_key={"instance": self.instance},
                           timeout=self.timeout)

    def counters(self, *names: str) -> dict[str, float]:
        """The current value of each counter ``name`` (without ``_total``) in this group, 0 if absent."""
        response = requests.get(f"{self.url}/api/v1/metrics", timeout=self.timeout)
        response.raise_for_status()
        values = dict.fromkeys(names, 0.0)
        for group in response.json().get("data") or []:
            if group.get("labels") != {"job": self.job, "instance": self.instance}:
                continue
            for name in names:
                family = group.get(f"{name}_total") or group.get(name) or {}
                values[name] = sum(float(m.get("value", 0)) for m in family.get("metrics") or [])
        return values


def _gauge(name: str, documentation: str, labels: dict[str, str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _reason(exc: BaseException) -> str:
    """A one-line reason for a failed Pushgateway request."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    if isinstance(exc, URLError) and not isinstance(exc, HTTPError):
        return str(exc.reason)
    return (str(exc) or type(exc).__name__).splitlines()[0]


def _print_warning(line: str, stream: TextIO | None = None) -> None:
    """One line on stderr (never raising: a closed stderr must not fail the job either)."""
    try:
        print(line, file=stream or sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell reports it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class JobRun:
    """One run of a job, pushed at its start and its end. Also a context manager:

    >>> with JobRun(JobOptions("nightly-train", team="ml", model="fraud")):   # doctest: +SKIP
    ...     train()

    An exception in the block is a failure (exit code 1; ``SystemExit`` keeps its code,
    ``KeyboardInterrupt`` is 130) and is re-raised.
    """

    def __init__(self, options: JobOptions, *, stderr: TextIO | None = None, clock: Callable[[], float] = time.time):
        self.options = options
        self.gateway = Pushgateway(options.pushgateway, options.name, options.instance, options.timeout_seconds)
        self.labels = {"team": options.team, "model": options.model}
        self.stderr = stderr
        self.clock = clock
        self.started_at: float | None = None
        self.pushed: list[str] = []   # "start" / "end": what reached the Pushgateway (for tests and callers)
        self.warned = False   # one line on stderr per run, however many pushes fail

    def _warn(self, what: str, exc: BaseException, consequence: str = "") -> None:
        if self.warned:
            return
        self.warned = True
        verb = "read the job's" if consequence else "push the job's"
        _print_warning(f"inferwatch job {self.options.name}: cannot {verb} {what} "
                       f"{'from' if consequence else 'to'} the Pushgateway at {self.options.pushgateway} "
                       f"({_reason(exc)}); {consequence + ', ' if consequence else ''}the job itself is not affected",
                       self.stderr)

    def start_families(self) -> list[Metric]:
        o, labels, now = self.options, self.labels, self.started_at or 0.0
        families: list[Metric] = [
            _gauge("inferwatch_job_running", "1 while the job runs, 0 after it ended.", labels, 1),
            _gauge("inferwatch_job_last_start_timestamp_seconds", "When the job's last run started (Unix time).",
                   labels, now),
        ]
        if o.schedule_timestamp is not None:
            families += [
                _gauge("inferwatch_job_last_scheduled_timestamp_seconds",
                       "When the job's last run was scheduled to start (Unix time).", labels, o.schedule_timestamp),
                _gauge("inferwatch_job_last_start_delay_seconds",
                       "How late the job's last run started: actual minus scheduled start, in seconds.",
                       labels, now - o.schedule_timestamp),
            ]
        if o.max_age_seconds is not None:
            families.append(_gauge("inferwatch_job_max_age_seconds",
                                   "This job's own limit on the time since its last success, in seconds "
                                   "(InferwatchJobNotSucceededRecently).", labels, o.max_age_seconds))
        if o.max_duration_seconds is not None:
            families.append(_gauge("inferwatch_job_max_duration_seconds",
                                   "This job's own limit on a run's duration, in seconds (InferwatchJobDurationHigh).",
                                   labels, o.max_duration_seconds))
        info = InfoMetricFamily("inferwatch_job", "The environment of the job's last run: Python, inferwatch, key "
                                                  "package versions and a hash of every installed package. Always 1.")
        info.add_metric([], {**environment_labels(o.packages), **labels})
        families.append(info)
        return families

    def end_families(self, exit_code: int, counters: dict[str, float] | None) -> list[Metric]:
        """The result of the run; ``counters`` are the group's current runs/failures (read back), or
        None when they could not be read: then the counters are left out, so the Pushgateway keeps
        their last values (a POST replaces only what it carries) instead of restarting them at 1."""
        labels, end = self.labels, self.clock()
        start = self.started_at if self.started_at is not None else end
        failed = exit_code != 0
        families: list[Metric] = [
            _gauge("inferwatch_job_running", "1 while the job runs, 0 after it ended.", labels, 0),
            _gauge("inferwatch_job_last_end_timestamp_seconds", "When the job's last run ended (Unix time).",
                   labels, end),
            _gauge("inferwatch_job_last_duration_seconds", "How long the job's last run took, in seconds.",
                   labels, max(0.0, end - start)),
            _gauge("inferwatch_job_last_exit_code",
                   "Exit code of the job's last run: 0 success; 128 + N killed by signal N.", labels, exit_code),
            _gauge("inferwatch_job_last_failure_timestamp_seconds" if failed else
                   "inferwatch_job_last_success_timestamp_seconds",
                   "When a run of the job last ended with a non-zero exit code (Unix time)." if failed else
                   "When a run of the job last ended with exit code 0 (Unix time).", labels, end),
        ]
        if counters is None:
            return families
        for name, help_text, value in (
                ("inferwatch_job_runs", "Runs of the job that ended, as counted by the Pushgateway's group.",
                 counters["inferwatch_job_runs"] + 1),
                ("inferwatch_job_failures", "Runs of the job that ended with a non-zero exit code.",
                 counters["inferwatch_job_failures"] + (1 if failed else 0))):
            family = CounterMetricFamily(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), value)
            families.append(family)
        return families

    def start(self) -> "JobRun":
        self.started_at = self.clock()
        try:
            self.gateway.push(self.start_families())
            self.pushed.append("start")
        except Exception as exc:   # monitoring never fails the job
            self._warn("start", exc)
        return self

    def finish(self, exit_code: int) -> None:
        """Push the run's result. When the Pushgateway answers but the counters cannot be read back
        (e.g. a proxy in front of it lets only pushes through) the result is still pushed, without
        the counters; when it cannot be reached at all, the push is not tried (a second timeout)."""
        try:
            counters: dict[str, float] | None = self.gateway.counters("inferwatch_job_runs",
                                                                      "inferwatch_job_failures")
        except (requests.ConnectionError, requests.Timeout) as exc:
            self._warn("result", exc)
            return
        except Exception as exc:
            counters = None
            self._warn("run and failure counters", exc, "they keep their last values")
        try:
            self.gateway.push(self.end_families(exit_code, counters))
            self.pushed.append("end")
        except Exception as exc:
            self._warn("result", exc)

    def __enter__(self) -> "JobRun":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            code = 0
        elif issubclass(exc_type, SystemExit):
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        elif issubclass(exc_type, KeyboardInterrupt):
            code = 128 + signal.SIGINT
        else:
            code = 1
        self.finish(code)


def monitored_job(name: str, **options: Any) -> Callable[[F], F]:
    """Decorate a function so each call is one run of job ``name`` (keyword options as JobOptions).

    The options are checked when the function is decorated (a ValueError names the bad ones). They
    are resolved again at each call, so ``$INFERWATCH_PUSHGATEWAY`` set later is used; if that then
    fails, the call runs unmonitored with a line on stderr: monitoring never fails the job."""
    JobOptions(name, **options)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                run = JobRun(JobOptions(name, **options))
            except ValueError as exc:
                _print_warning(f"inferwatch job {name}: not monitored ({exc}); the job itself is not affected")
                return func(*args, **kwargs)
            with run:
                return func(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def run_command(run: JobRun, argv: list[str]) -> int:
    """Run ``argv`` (no shell) as one run of the job; return its exit status (128 + N for signal N).

    The child inherits stdin, stdout and stderr. SIGTERM, SIGINT and SIGHUP sent to this process are
    passed on to the child, which decides how to end; its exit code is what this returns. When stdin is
    a terminal the child stays in the terminal's foreground process group (so it can read from it) and a
    terminal Ctrl-C reaches it directly: then SIGINT is not forwarded, or the child would get it twice.
    Otherwise the child runs in its own session and every forwarded signal reaches it exactly once.
    """
    try:
        interactive = os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        interactive = False
    forwarded = [s for s in FORWARDED_SIGNALS if not (interactive and s == signal.SIGINT)]
    child: subprocess.Popen | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        if child is None:
            pending.append(signum)
        elif child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in forwarded}
    try:
        run.start()
        try:
            child = subprocess.Popen(argv, start_new_session=not interactive)
        except OSError as exc:
            _print_warning(f"inferwatch job {run.options.name}: cannot run {argv[0]!r}: {exc.strerror or exc}",
                           run.stderr)
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            run.finish(code)
            return code
        for signum in pending:
            child.send_signal(signum)
        returncode = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    code = exit_status(returncode)
    run.finish(code)
    return code


def exit_like(code: int) -> int:
    """End this process the way the child ended: re-raise a fatal signal, else return the code."""
    if code > 128 and code - 128 in {int(s) for s in FORWARDED_SIGNALS}:
        signum = code - 128
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return code
