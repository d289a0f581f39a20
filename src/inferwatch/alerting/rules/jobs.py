"""Alerts on training and data jobs (pushed through a Pushgateway by `inferwatch job`).

They go to the team a job names itself: its own ``team`` label (`inferwatch job --team ml|data`).
"""

from __future__ import annotations

from .spec import AlertGroup, AlertRule


def _over_job_limit(value: str, limit_metric: str) -> str:
    """``value`` above the job's own limit (pushed by `inferwatch job --max-...`), else ``threshold_seconds``.

    Compared with ``> on (job, instance) group_left ()``: one limit per job, and the alert keeps
    every label of the job's series (``team`` routes it), which plain ``on`` would drop.
    """
    return ("(\n" + value + ")\n> on (job, instance) group_left ()\n(\n  " + limit_metric + "\n"
            "  or on (job, instance)\n  0 * inferwatch_job_last_start_timestamp_seconds + ${threshold_seconds}\n)\n")


_JOB = "Job {{ $labels.job }} on {{ $labels.instance }}{{ if $labels.model }} (model {{ $labels.model }}){{ end }}"

JOBS = AlertGroup("inferwatch-jobs.alerts", "{{ $labels.team }}", (
    AlertRule(
        "InferwatchJobFailed",
        summary="The last run of a training or data job failed.",
        expr="inferwatch_job_last_exit_code != 0",
        description=(_JOB + " ended its last run with exit code {{ $value }}; threshold: a non-zero exit code for "
                     "${for}. It resolves when a run succeeds; until then downstream data or models are stale."),
    ),
    AlertRule(
        "InferwatchJobNotSucceededRecently",
        summary="A training or data job has not succeeded for too long.",
        expr=_over_job_limit("  time() - (inferwatch_job_last_success_timestamp_seconds or on (job, instance) "
                             "inferwatch_job_last_start_timestamp_seconds)\n", "inferwatch_job_max_age_seconds"),
        description=(_JOB + " last succeeded {{ $value | humanizeDuration }} ago (or, never having succeeded, last "
                     "started then); threshold: the job's --max-age, else ${threshold_seconds:duration}, for "
                     "${for}. It fails, or it stopped being run."),
    ),
    AlertRule(
        "InferwatchJobDurationHigh",
        summary="A training or data job runs, or ran, longer than expected.",
        expr=_over_job_limit("  inferwatch_job_last_duration_seconds unless on (job, instance) "
                             "(inferwatch_job_running == 1)\n"
                             "  or on (job, instance)\n"
                             "  (time() - inferwatch_job_last_start_timestamp_seconds) and on (job, instance) "
                             "(inferwatch_job_running == 1)\n", "inferwatch_job_max_duration_seconds"),
        description=(_JOB + " took {{ $value | humanizeDuration }} (its last run, or so far the run in progress); "
                     "threshold: the job's --max-duration, else ${threshold_seconds:duration}, for ${for}."),
    ),
))
