"""The `inferwatch` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from inferwatch import __version__
from inferwatch.config import Config, ConfigError, LoggingConfig, load_config


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(cfg: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "upstream.url": args.upstream,
        "proxy.port": args.proxy_port,
        "admin.port": args.admin_port,
        "model.name": args.model,
        "model.version": args.model_version,
        "payload.features": args.features,
        "reference.path": getattr(args, "reference", None),
        "drift.interval_seconds": getattr(args, "drift_interval", None),
    }
    return {key: value for key, value in pairs.items() if value is not None}


def _add_dask_flags(parser: argparse.ArgumentParser, engine_help: str) -> None:
    """``--engine`` and the Dask cluster's flags, shared by ``profile`` and ``batch``."""
    parser.add_argument("--engine", choices=["local", "dask"], default="local", help=engine_help)
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="the Dask scheduler (tcp://host:8786); default with --engine dask: a local cluster")
    parser.add_argument("--dask-workers", type=int, metavar="N", help="worker processes of the local cluster "
                                                                       "(default: one per CPU)")
    parser.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="give up on an unreachable scheduler after this long (5)")


def _dask_client(args: argparse.Namespace) -> Any:
    """The client of ``--scheduler`` (a local cluster without it), a context manager."""
    from inferwatch.reference.dask_engine import dask_client

    return dask_client(args.scheduler, workers=args.dask_workers, timeout=args.connect_timeout)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML configuration file (optional)")
    parser.add_argument("--upstream", metavar="URL", help="model server URL (upstream.url)")
    parser.add_argument("--proxy-port", type=int, metavar="N", help="proxy listen port (proxy.port)")
    parser.add_argument("--admin-port", type=int, metavar="N", help="admin listen port: /metrics (admin.port)")
    parser.add_argument("--model", metavar="NAME", help="model name (model.name)")
    parser.add_argument("--model-version", metavar="V", help="model version (model.version)")
    parser.add_argument("--features", metavar="a,b,c", help="feature names for positional rows (payload.features)")


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config, _overrides(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return 2
    setup_logging(cfg.logging)
    from inferwatch.sidecar import Sidecar

    try:
        sidecar = Sidecar(cfg)
    except (OSError, ValueError) as exc:  # e.g. an unreadable or corrupt reference profile
        print(f"inferwatch: {exc}", file=sys.stderr)
        return 2
    try:
        sidecar.start()
    except OSError as exc:
        print(f"inferwatch: cannot listen: {exc}", file=sys.stderr)
        # nothing ran: the usual shutdown summary would bury the one line that matters
        logging.getLogger("inferwatch.sidecar").setLevel(logging.WARNING)
        sidecar.stop()
        return 1
    proxy = f"http://{cfg.proxy.listen_address}:{sidecar.proxy_port} -> {cfg.upstream.url}" if sidecar.proxy else "off"
    print(f"inferwatch {__version__}: proxy {proxy}; metrics on "
          f"{'https' if cfg.admin.tls.enabled else 'http'}://{cfg.admin.listen_address}:{sidecar.admin_port}/metrics",
          file=sys.stderr, flush=True)
    # Non-zero when a shutdown could not process everything it had acknowledged (logged with the count).
    return 1 if sidecar.serve_forever() else 0


def cmd_profile(args: argparse.Namespace) -> int:
    from inferwatch.reference import build_profile_from_file

    def names(text: str | None) -> list[str]:
        return [n.strip() for n in (text or "").split(",") if n.strip()]

    options = dict(fmt=args.format, features=names(args.features) or None, categorical=names(args.categorical),
                   numeric=names(args.numeric), prediction_columns=_prediction_columns(args.prediction_column),
                   label_column=args.label_column,
                   sample_size=args.sample_size, bins=args.bins, top_k=args.top_k, chunk_rows=args.chunk_rows,
                   seed=args.seed)
    try:
        if args.engine == "dask" or args.scheduler:
            from inferwatch.reference.dask_engine import profile_with_dask

            with _dask_client(args) as client:
                profile, run = profile_with_dask(client, args.input, **options)
            print(f"dask: {run.pieces} pieces on {run.workers} workers; merging took {run.merge_seconds:.2f} s",
                  file=sys.stderr)
        else:
            profile = build_profile_from_file(args.input, **options)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"inferwatch profile: {exc}", file=sys.stderr)
        return 1
    digest = profile.save(args.output)
    print(f"{args.output}: {profile.describe()}")
    print(f"hash {digest}")
    return 0


def _prediction_columns(items: list[str] | None) -> dict[str, str]:
    """``--prediction-column COL[=OUTPUT]`` (repeatable, or comma-separated) as {column: output}."""
    predictions: dict[str, str] = {}
    for item in items or []:
        for part in (p.strip() for p in item.split(",")):
            if part:
                column, _, output = part.partition("=")
                predictions[column] = output or column
    return predictions


def cmd_batch(args: argparse.Namespace) -> int:
    """Exit 0, or 1 when a --fail-on condition holds, or 2 on a usage or input error."""
    from inferwatch.batch import FAIL_ON, BatchError, BatchOptions, BatchRun, failures, print_lines, summary_lines

    fail_on = [c.strip() for c in (args.fail_on or "").split(",") if c.strip()]
    unknown = [c for c in fail_on if c not in FAIL_ON]
    if unknown:
        print(f"inferwatch batch: --fail-on: unknown condition(s) {', '.join(unknown)} (of {', '.join(FAIL_ON)})",
              file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, {"reference.path": args.reference} if args.reference else {})
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    setup_logging(LoggingConfig(level="WARNING"))
    # No port is opened: the sidecar's warnings about its write endpoints' exposure do not apply.
    logging.getLogger("inferwatch.sidecar").setLevel(logging.ERROR)
    thresholds = None
    if args.thresholds:
        from inferwatch.alerting.thresholds import ThresholdsError, load_thresholds

        try:
            thresholds = load_thresholds(args.thresholds)
        except ThresholdsError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
    try:
        options = BatchOptions(args.input, batch_id=args.batch_id or "", label_column=args.label_column,
                               prediction_columns=_prediction_columns(args.prediction_column),
                               chunk_rows=args.chunk_rows, fmt=args.format, strict=args.strict, engine=args.reader)
        dask_lines: list[str] = []
        if args.engine == "dask" or args.scheduler:
            from inferwatch.batch_dask import DaskBatchRun, summary_line

            with _dask_client(args) as client:
                on_cluster = DaskBatchRun(cfg, options, client)
                on_cluster.run()
            for where in on_cluster.summary.bad_chunks:
                print(f"inferwatch batch: cannot parse {where}", file=sys.stderr)
            run, families = on_cluster.driver, on_cluster.families()
            dask_lines = [summary_line(on_cluster.stats)] + [f"dask: not merged exactly: {c}"
                                                             for c in on_cluster.caveats()]
        else:
            run = BatchRun(cfg, options)
            run.run(on_bad_chunk=lambda where: print(f"inferwatch batch: cannot parse {where}", file=sys.stderr))
            families = run.families()
    except (BatchError, OSError, ValueError, RuntimeError) as exc:
        print(f"inferwatch batch: {exc}", file=sys.stderr)
        return 2
    if args.pushgateway:
        try:
            run.push(args.pushgateway, job=args.job, timeout=args.push_timeout, families=families)
        except Exception as exc:  # noqa: BLE001 - monitoring never decides the exit code: --fail-on does
            print(f"inferwatch batch: could not push to {args.pushgateway}: {str(exc)[:200]}", file=sys.stderr)
    reported = _write_report(run, args.report) if args.report else True
    print_lines(summary_lines(run, families) + dask_lines)
    reasons = failures(families, fail_on, thresholds)
    for reason in reasons:
        print(f"FAIL {reason}")
    if not reported:
        return 2  # the report asked for is missing: an error, whatever --fail-on says
    return 1 if reasons else 0


def _write_report(run: Any, path: str) -> bool:
    from inferwatch.batch import BatchError, write_report

    try:
        write_report(run, path)
        print(f"report: {path}")
        return True
    except (OSError, BatchError) as exc:
        print(f"inferwatch batch: cannot write the report {path}: {exc}", file=sys.stderr)
        return False


def _add_batch_parser(sub: argparse._SubParsersAction) -> None:
    batch = sub.add_parser(
        "batch", help="run a scored table through the sidecar's monitors and push the results",
        description="Read a scored table (CSV, JSON lines or Parquet; a path, a glob or an fsspec URL) in chunks and "
                    "run it through the monitors of the sidecar that --config describes (input guard, drift, "
                    "outputs, segments, and performance with --label-column), against the same reference. Print a "
                    "summary, push the results to a Pushgateway (grouped by job, instance = the batch id, model and "
                    "model version, so the shipped drift, schema and performance alerts fire on them), and exit 1 when "
                    "a --fail-on condition holds. Exit 2: bad usage, a column the configuration names is not in the "
                    "file, (--strict) an unparsable chunk, or a --report that could not be written.")
    batch.add_argument("--config", "-c", metavar="FILE", help="the sidecar's YAML configuration")
    batch.add_argument("--reference", metavar="FILE", help="reference profile (reference.path)")
    batch.add_argument("--input", "-i", required=True, metavar="PATH|GLOB|URL",
                       help="CSV, JSON lines or Parquet: a file, a glob (quoted), or an fsspec URL (s3://, gs://, ...)")
    batch.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the file name")
    batch.add_argument("--label-column", metavar="COL", help="the ground-truth column: performance is measured")
    batch.add_argument("--prediction-column", action="append", metavar="COL[=OUTPUT]",
                       help="a model output column; =OUTPUT names it as the sidecar sees it (a scalar prediction is "
                            "'prediction'); repeatable. Default: the columns named as the configured or reference "
                            "outputs")
    batch.add_argument("--batch-id", metavar="ID", help="the batch's name: the `instance` label (default: random)")
    batch.add_argument("--pushgateway", metavar="URL", help="push the results to this Pushgateway")
    batch.add_argument("--job", default="inferwatch-batch", metavar="NAME",
                       help="the `job` label of the pushed group (default inferwatch-batch; the shipped rules "
                            "select jobs containing 'inferwatch')")
    batch.add_argument("--push-timeout", type=float, default=10.0, metavar="SECONDS", help=argparse.SUPPRESS)
    batch.add_argument("--fail-on", metavar="drift,data-quality,performance",
                       help="exit 1 when any of these holds, judged by the shipped alerts' thresholds")
    batch.add_argument("--thresholds", metavar="FILE", help="alert thresholds for --fail-on (prometheus/thresholds.yaml)")
    batch.add_argument("--strict", action="store_true", help="stop (exit 2) at the first chunk that cannot be parsed")
    batch.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML drift report")
    batch.add_argument("--chunk-rows", type=int, default=10_000, metavar="N", help="rows per chunk (default 10000)")
    batch.add_argument("--reader", choices=["auto", "arrow", "python"], default="auto", help=argparse.SUPPRESS)
    _add_dask_flags(batch, "local: this process; dask: partitions monitored on a Dask cluster, the window "
                           "evaluated here (docs/configuration.md: what is not merged exactly)")
    batch.set_defaults(func=cmd_batch)


def _is_actions_file(path: str | None) -> bool:
    """Whether ``path`` holds an actions file (``inferwatch actions``), not a sidecar's configuration:
    a list of actions at the top level, or only keys of the actions file some of which the sidecar's
    file does not have. Read without ${ENV} so an unset token does not hide the shape."""
    import dataclasses
    from pathlib import Path

    import yaml

    from inferwatch.config import ActionsConfig

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    if not isinstance(data, dict) or not data:
        return False
    if isinstance(data.get("actions"), list):
        return True
    actions_keys = {f.name for f in dataclasses.fields(ActionsConfig)}
    sidecar_keys = {f.name for f in dataclasses.fields(Config)}
    return set(data) <= actions_keys and not set(data) <= sidecar_keys


def cmd_check_config(args: argparse.Namespace) -> int:
    if _is_actions_file(args.config):
        print(f"{args.config}: this is an actions file (for `inferwatch actions`), not a sidecar configuration; "
              f"check it with: inferwatch actions --config {args.config} --check", file=sys.stderr)
        return 2
    cfg = _load(args)
    if cfg is None:
        return 2
    print(f"{cfg.source}: OK")
    print(cfg.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.generative:
        from inferwatch.demo.generative import run_generative_demo

        return run_generative_demo(duration=args.duration, proxy_port=args.proxy_port, admin_port=args.admin_port,
                                   upstream_port=args.upstream_port, with_stack=not args.no_stack, keep=args.keep)
    from inferwatch.demo.runner import run_demo

    return run_demo(duration=args.duration, proxy_port=args.proxy_port, admin_port=args.admin_port,
                    upstream_port=args.upstream_port, challenger_port=args.challenger_port,
                    with_stack=not args.no_stack, keep=args.keep)


def cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass

    from inferwatch.support.auth import hash_password

    password = args.password if args.password is not None else getpass.getpass("password: ")
    print(hash_password(password))
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from inferwatch.job import DEFAULT_PACKAGES, JobOptions, JobRun, exit_like, run_command

    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("inferwatch job: no command given: inferwatch job --name NAME -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    packages = tuple(DEFAULT_PACKAGES) + tuple(p.strip() for item in args.package or [] for p in item.split(",")
                                               if p.strip())
    try:
        options = JobOptions(args.name, pushgateway=args.pushgateway or "", instance=args.instance or "",
                             team=args.team, model=args.model or "", schedule_timestamp=args.schedule_timestamp,
                             max_age_seconds=args.max_age, max_duration_seconds=args.max_duration,
                             packages=packages, timeout_seconds=args.push_timeout)
    except ValueError as exc:
        print(f"inferwatch job: {exc}", file=sys.stderr)
        return 2
    return exit_like(run_command(JobRun(options), argv))


def cmd_actions(args: argparse.Namespace) -> int:
    import signal
    import threading

    from inferwatch.config import load_actions_config
    from inferwatch.alerting.receiver import ActionsServer

    try:
        cfg = load_actions_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    warning = cfg.exposure_warning(cfg.listen_address)
    if args.check:
        print(f"{cfg.source}: OK ({len(cfg.actions)} action(s): {', '.join(a.name for a in cfg.actions)}; "
              f"auth: {cfg.auth_kind()})")
        if warning:
            print(f"WARNING: {warning}")
        return 0
    if warning:
        print(f"inferwatch actions: WARNING: {warning}", file=sys.stderr, flush=True)
    setup_logging(LoggingConfig())
    server = ActionsServer(cfg)
    try:
        server.start()
    except OSError as exc:
        print(f"inferwatch actions: cannot listen on {cfg.listen_address}:{cfg.port}: {exc}", file=sys.stderr)
        server.runner.stop()
        return 1
    print(f"inferwatch actions {__version__}: Alertmanager webhook on "
          f"{'https' if cfg.tls.cert_file else 'http'}://{cfg.listen_address}:{server.port}/v1/alerts, "
          f"metrics on /metrics; actions: {', '.join(a.name for a in cfg.actions)}", file=sys.stderr, flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


def _seconds(text: str) -> float:
    from inferwatch.alerting.promql import duration_seconds

    try:
        return float(text)
    except ValueError:
        value = duration_seconds(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected seconds or a duration such as 90m or 1d, got {text!r}")
        return value


def _add_job_parser(sub: argparse._SubParsersAction) -> None:
    job = sub.add_parser(
        "job", help="run a command (a training run, a pipeline step) and push its health to a Pushgateway",
        description="Run COMMAND with its output and exit code passed through unchanged (SIGTERM/SIGINT/SIGHUP "
                    "are forwarded to it), and push inferwatch_job_* (start, end, duration, exit code, last "
                    "success, run and failure counters, environment) to a Prometheus Pushgateway, grouped by "
                    "job name and instance. An unreachable Pushgateway is reported on stderr and never fails "
                    "the job.",
        usage="inferwatch job --name NAME [options] -- COMMAND [ARG ...]")
    job.add_argument("--name", required=True, help="the job's name: the `job` label")
    job.add_argument("--pushgateway", metavar="URL",
                     help="Pushgateway URL (default $INFERWATCH_PUSHGATEWAY, else http://127.0.0.1:9091)")
    job.add_argument("--instance", metavar="ID", help="the `instance` label (default: the host name)")
    job.add_argument("--team", choices=("ml", "data"), default="ml",
                     help="the `team` label: who gets this job's alerts (default ml)")
    job.add_argument("--model", metavar="NAME", help="the model this job is for (the `model` label)")
    job.add_argument("--schedule-timestamp", type=float, metavar="T",
                     help="when this run was scheduled (Unix time): the start delay is measured")
    job.add_argument("--max-age", type=_seconds, metavar="DURATION",
                     help="alert when the last success is older than this (overrides the thresholds' default)")
    job.add_argument("--max-duration", type=_seconds, metavar="DURATION",
                     help="alert when a run takes longer than this (overrides the thresholds' default)")
    job.add_argument("--package", action="append", metavar="NAME[,NAME]",
                     help="more packages whose versions label inferwatch_job_info (repeatable)")
    job.add_argument("--push-timeout", type=float, default=5.0, metavar="SECONDS",
                     help="timeout of each Pushgateway request (default 5)")
    job.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command and its arguments")
    job.set_defaults(func=cmd_job)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferwatch",
        description="A Prometheus sidecar that watches machine learning models in production.",
    )
    parser.add_argument("--version", action="version", version=f"inferwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the sidecar (proxy + admin port)",
                         description="Run the sidecar: a transparent proxy in front of the model server and an "
                                     "admin port with /metrics, /healthz, /readyz, /v1/status and /v1/events.")
    _add_config_flags(run)
    run.add_argument("--reference", metavar="FILE", help="reference profile for drift (reference.path)")
    run.add_argument("--drift-interval", type=float, metavar="SECONDS",
                     help="seconds between drift evaluations (drift.interval_seconds)")
    run.set_defaults(func=cmd_run)

    prof = sub.add_parser("profile", help="build a reference profile from training data",
                          description="Profile a CSV, JSON lines or Parquet file (read in chunks, bounded memory) "
                                      "into a reference profile for `inferwatch run --reference`.")
    prof.add_argument("--input", "-i", required=True, metavar="FILE", help="CSV, JSON lines (.jsonl) or Parquet")
    prof.add_argument("--output", "-o", required=True, metavar="FILE", help="where to write reference.json")
    prof.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the file name")
    prof.add_argument("--features", metavar="a,b,c", help="feature columns (default: every other column)")
    prof.add_argument("--categorical", metavar="a,b", help="columns to treat as categorical")
    prof.add_argument("--numeric", metavar="a,b", help="columns to treat as numeric")
    prof.add_argument("--prediction-column", action="append", metavar="COL[=OUTPUT]",
                      help="a model output column; =OUTPUT names it as the sidecar sees it (a scalar prediction "
                           "is 'prediction'); repeatable")
    prof.add_argument("--label-column", metavar="COL", help="the ground-truth label column")
    prof.add_argument("--sample-size", type=int, default=10_000, metavar="N",
                      help="rows kept for quantiles, KS/Wasserstein, correlation and PCA (default 10000)")
    prof.add_argument("--bins", type=int, default=10, metavar="N", help="quantile bins per numeric column (10)")
    prof.add_argument("--top-k", type=int, default=20, metavar="K", help="categories kept per column (20)")
    prof.add_argument("--chunk-rows", type=int, default=20_000, metavar="N", help=argparse.SUPPRESS)
    prof.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    _add_dask_flags(prof, "local: this process; dask: partitions on a Dask cluster, the same profile "
                          "(--input may then be a glob of files)")
    prof.set_defaults(func=cmd_profile)

    check = sub.add_parser("check-config", help="validate a configuration file",
                           description="Validate a configuration: exit 0 with a summary, or exit 2 with every "
                                       "problem as file:key: message.")
    _add_config_flags(check)
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="run a demo model server, the sidecar and drifting traffic",
                          description="Start a small loan-approval model server, the sidecar in front of it, and "
                                      "traffic whose inputs drift halfway through; print a live summary.")
    demo.add_argument("--duration", type=float, default=60.0, metavar="S", help="seconds of traffic (default 60)")
    demo.add_argument("--proxy-port", type=int, default=8080, metavar="N")
    demo.add_argument("--admin-port", type=int, default=9180, metavar="N")
    demo.add_argument("--upstream-port", type=int, default=8081, metavar="N")
    demo.add_argument("--challenger-port", type=int, default=8082, metavar="N",
                      help="the challenger model server that gets shadow traffic (default 8082)")
    demo.add_argument("--no-stack", action="store_true", help="do not start Prometheus/Alertmanager even if present")
    demo.add_argument("--keep", action="store_true",
                      help="after the traffic, keep every server (and printed link) up until Ctrl-C")
    demo.add_argument("--generative", action="store_true",
                      help="a language model instead: an OpenAI-compatible stub that streams tokens, chat traffic "
                           "whose prompts grow and a model that degrades halfway (slower first token, truncations, "
                           "refusals), and the generative alerts")
    demo.set_defaults(func=cmd_demo)

    hp = sub.add_parser("hash-password", help="hash a password for admin.*_auth.basic_users",
                        description="Print a PBKDF2 hash for admin.metrics_auth/write_auth basic_users.")
    hp.add_argument("--password", help="the password (prompted when omitted)")
    hp.set_defaults(func=cmd_hash_password)

    _add_job_parser(sub)
    _add_batch_parser(sub)

    actions = sub.add_parser(
        "actions", help="run alert-triggered actions: an Alertmanager webhook receiver",
        description="Receive Alertmanager webhook notifications on POST /v1/alerts and, for firing alerts that "
                    "match an action's matchers, run it (an HTTP request or a command) with de-duplication, "
                    "cooldown, a bounded queue, retries with backoff and a JSON lines audit log.")
    actions.add_argument("--config", "-c", required=True, metavar="FILE", help="actions file (examples/actions.yaml)")
    actions.add_argument("--check", action="store_true", help="validate the file and exit")
    actions.set_defaults(func=cmd_actions)

    from inferwatch.alerting.render import add_rules_parser

    add_rules_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
