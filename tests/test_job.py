"""Job health without a Pushgateway: options, the pushed families, the environment, the command line."""

from __future__ import annotations

import platform

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from inferwatch.cli import main as cli_main
from inferwatch.job import JobOptions, JobRun, _Families, environment_labels, exit_status


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
