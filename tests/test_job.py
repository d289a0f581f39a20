"""Job health without a Pushgateway: options, the pushed families, the environment, the command line."""

from __future__ import annotations

import platform

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from inferwatch.cli import main as cli_main
from inferwatch.job import JobOptions, JobRun, _Families, environment_labels, exit_status, monitored_job


def exposition(families) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()


def test_options_are_validated_and_defaulted(monkeypatch):
    monkeypatch.setenv("INFERWATCH_PUSHGATEWAY", "http://gateway:9091/")
    options = JobOptions("train")
    assert options.pushgateway == "http://gateway:9091" and options.instance
    with pytest.raises(ValueError, match="team: must be one of ml, data"):
        JobOptions("train", team="finance")
    with pytest.raises(ValueError, match="name: must not be empty"):
        JobOptions(" ")
    with pytest.raises(ValueError, match="pushgateway: expected an http"):
        JobOptions("train", pushgateway="gateway:9091")
    with pytest.raises(ValueError, match="max_age_seconds: must be greater than 0"):
        JobOptions("train", max_age_seconds=0)


def test_environment_labels_name_python_and_installed_packages():
    labels = environment_labels(("numpy", "scikit-learn", "not-installed-pkg"))
    assert labels["python_version"] == platform.python_version()
    assert labels["numpy"] and "not_installed_pkg" not in labels
    assert len(labels["environment_hash"]) == 12
    assert environment_labels(("numpy",))["environment_hash"] == labels["environment_hash"]


def test_exit_status_follows_the_shell():
    assert exit_status(0) == 0 and exit_status(3) == 3 and exit_status(-15) == 143


def test_pushed_families_have_help_and_labels():
    clock = iter([100.0, 160.0])
    run = JobRun(JobOptions("train", pushgateway="http://127.0.0.1:1", team="data", model="fraud",
                            schedule_timestamp=40.0, max_age_seconds=3600), clock=lambda: next(clock))
    run.started_at = run.clock()
    start = exposition(run.start_families())
    assert 'inferwatch_job_running{model="fraud",team="data"} 1.0' in start
    assert 'inferwatch_job_last_start_delay_seconds{model="fraud",team="data"} 60.0' in start
    assert 'inferwatch_job_max_age_seconds{model="fraud",team="data"} 3600.0' in start
    assert "inferwatch_job_info{" in start and "# HELP inferwatch_job_info " in start
    end = exposition(run.end_families(2, {"inferwatch_job_runs": 4, "inferwatch_job_failures": 1}))
    assert 'inferwatch_job_last_duration_seconds{model="fraud",team="data"} 60.0' in end
    assert 'inferwatch_job_runs_total{model="fraud",team="data"} 5.0' in end
    assert 'inferwatch_job_failures_total{model="fraud",team="data"} 2.0' in end
    assert "inferwatch_job_last_failure_timestamp_seconds" in end and "last_success" not in end
    assert "_created" not in end
    for text in (start, end):
        names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        helps = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
        assert names == helps


def test_cli_needs_a_command_and_valid_options(capsys):
    assert cli_main(["job", "--name", "train"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert cli_main(["job", "--name", " ", "--", "true"]) == 2
    assert "name: must not be empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["job", "--name", "train", "--max-age", "soon", "--", "true"])


def test_cli_passes_the_exit_code_through_without_a_pushgateway(capsys):
    assert cli_main(["job", "--name", "train", "--pushgateway", "http://127.0.0.1:1", "--", "sh", "-c", "exit 5"]) == 5
    assert "the job itself is not affected" in capsys.readouterr().err


# --- the Python API (context manager, decorator) against an in-memory Pushgateway ------------------


class FakeGateway:
    """Stands in for job.Pushgateway: a POST replaces the pushed metric names of the group, as the real
    one does; ``fail`` makes ``push`` or ``counters`` raise like an unreachable or refusing gateway."""

    groups: dict = {}
    fail: set = set()

    def __init__(self, url, job, instance, timeout):
        self.key = (job, instance)

    def push(self, families):
        if "push" in self.fail:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        group = self.groups.setdefault(self.key, {})
        for family in families:
            for sample in family.samples:
                group[sample.name] = sample.value

    def counters(self, *names):
        if "counters" in self.fail:
            raise requests.HTTPError(response=type("R", (), {"status_code": 404})())
        if "push" in self.fail:
            raise requests.ConnectionError("refused")
        group = self.groups.get(self.key, {})
        return {name: group.get(f"{name}_total", 0.0) for name in names}


@pytest.fixture
def gateway(monkeypatch):
    monkeypatch.setattr("inferwatch.job.Pushgateway", FakeGateway)
    monkeypatch.setattr(FakeGateway, "groups", {})
    monkeypatch.setattr(FakeGateway, "fail", set())
    return FakeGateway


def options(name="train", **kwargs):
    return JobOptions(name, pushgateway="http://gateway:9091", instance="runner-1", **kwargs)


def test_context_manager_pushes_start_and_end_and_counts(gateway):
    with JobRun(options()) as run:
        assert gateway.groups[("train", "runner-1")]["inferwatch_job_running"] == 1
        assert run.pushed == ["start"]
    group = gateway.groups[("train", "runner-1")]
    assert run.pushed == ["start", "end"]
    assert group["inferwatch_job_running"] == 0 and group["inferwatch_job_last_exit_code"] == 0
    assert group["inferwatch_job_last_success_timestamp_seconds"] == group["inferwatch_job_last_end_timestamp_seconds"]
    with pytest.raises(ValueError):
        with JobRun(options()):
            raise ValueError("bad row")
    assert group["inferwatch_job_runs_total"] == 2 and group["inferwatch_job_failures_total"] == 1
    assert group["inferwatch_job_last_exit_code"] == 1


@pytest.mark.parametrize("raised, code", [
    (RuntimeError("boom"), 1),
    (SystemExit(), 0),            # sys.exit(): a success
    (SystemExit(4), 4),
    (SystemExit("fatal: no data"), 1),   # sys.exit("message") exits 1
    (KeyboardInterrupt(), 130),
])
def test_context_manager_exit_codes_and_the_exception_passes_through(gateway, raised, code):
    with pytest.raises(type(raised)) as info:
        with JobRun(options()):
            raise raised
    assert info.value is raised
    assert gateway.groups[("train", "runner-1")]["inferwatch_job_last_exit_code"] == code


def test_decorator_keeps_the_function_and_runs_once_per_call(gateway):
    @monitored_job("score", team="data", instance="runner-2", pushgateway="http://gateway:9091")
    def score(x, *, scale=1):
        """Scores x."""
        return x * scale

    assert score.__name__ == "score" and score.__doc__ == "Scores x."
    assert score(3, scale=2) == 6 and score(1) == 1
    group = gateway.groups[("score", "runner-2")]
    assert group["inferwatch_job_runs_total"] == 2 and group["inferwatch_job_failures_total"] == 0


def test_decorator_checks_its_options_when_applied(gateway):
    with pytest.raises(ValueError, match="team: must be one of ml, data"):
        monitored_job("score", team="finance")
    with pytest.raises(TypeError):
        monitored_job("score", no_such_option=1)


def test_decorator_runs_unmonitored_when_the_options_turn_bad_later(gateway, monkeypatch, capsys):
    monkeypatch.delenv("INFERWATCH_PUSHGATEWAY", raising=False)

    @monitored_job("score", instance="runner-1")
    def score():
        return "done"

    monkeypatch.setenv("INFERWATCH_PUSHGATEWAY", "gateway:9091")   # no scheme: invalid
    assert score() == "done"
    assert "inferwatch job score: not monitored (pushgateway: expected an http" in capsys.readouterr().err
    assert not gateway.groups


def test_an_unreachable_gateway_never_changes_the_block(gateway, capsys):
    gateway.fail = {"push"}
    with pytest.raises(ZeroDivisionError):
        with JobRun(options()) as run:
            1 / 0
    assert run.pushed == []
    err = capsys.readouterr().err
    assert "cannot push the job's start to the Pushgateway at http://gateway:9091 (" in err
    assert "the job itself is not affected" in err and len(err.splitlines()) == 1   # one line per run


def test_a_refused_counter_read_still_pushes_the_result(gateway, capsys):
    with JobRun(options()):
        pass
    gateway.fail = {"counters"}
    with pytest.raises(RuntimeError):
        with JobRun(options()) as run:
            raise RuntimeError("bad")
    group = gateway.groups[("train", "runner-1")]
    assert run.pushed == ["start", "end"] and group["inferwatch_job_last_exit_code"] == 1
    assert group["inferwatch_job_runs_total"] == 1 and group["inferwatch_job_failures_total"] == 0   # kept, not reset
    assert "cannot read the job's run and failure counters from the Pushgateway at http://gateway:9091 (HTTP 404); " \
           "they keep their last values" in capsys.readouterr().err


def test_a_closed_port_is_reported_not_raised(capsys):
    """The real HTTP client (no fake): nothing listens on the port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]   # closed again when the block ends
    with JobRun(JobOptions("train", pushgateway=f"http://127.0.0.1:{port}", timeout_seconds=2)) as run:
        value = "ran"
    assert value == "ran" and run.pushed == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err   # one line per run (the README's promise), though both pushes failed
    assert all("the job itself is not affected" in line for line in err)
