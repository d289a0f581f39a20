"""The prediction log: sampling, redaction, rotation, strict JSON, failing open."""

from __future__ import annotations

import datetime
import json
import math
import os
import threading

import numpy as np
import pytest

from inferwatch.config import PredictionLogConfig
from inferwatch.pipeline.predlog import REDACTED, PredictionLogger


def read_lines(path) -> list[dict]:
    def strict(token):
        raise ValueError(f"non-standard JSON constant {token}")

    with open(path, encoding="utf-8") as fh:
        return [json.loads(line, parse_constant=strict) for line in fh]


def batch(n: int, start: int = 0, **overrides):
    kwargs = dict(
        model="churn", model_version="v3", endpoint="/predict", status=200, latency_seconds=0.012,
        prediction_ids=[f"p{start + i}" for i in range(n)],
        timestamps=[1714564800.25 + i for i in range(n)],
        features={"age": [30 + i for i in range(n)], "email": [f"u{i}@example.com" for i in range(n)]},
        outputs={"score": [0.5] * n},
    )
    kwargs.update(overrides)
    return kwargs


def make(tmp_path, **config) -> PredictionLogger:
    config.setdefault("path", str(tmp_path / "predictions.jsonl"))
    return PredictionLogger(PredictionLogConfig(**config), rng=np.random.default_rng(7))


def test_line_format(tmp_path):
    logger = make(tmp_path, sample_rate=1.0)
    logger.log_batch(**batch(2), extra={"source": "proxy", "model": "ignored"})
    logger.close()
    lines = read_lines(tmp_path / "predictions.jsonl")
    assert logger.written == 2 and logger.errors == 0
    first = lines[0]
    assert first["prediction_id"] == "p0"
    assert first["timestamp"] == "2024-05-01T12:00:00.250000Z"
    assert datetime.datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).timestamp() == 1714564800.25
    assert first["timestamp_unix"] == 1714564800.25
    assert (first["model"], first["model_version"], first["endpoint"]) == ("churn", "v3", "/predict")
    assert first["status"] == 200 and first["latency_seconds"] == 0.012
    assert first["source"] == "proxy"  # extra keys are added; reserved ones cannot be overridden
    assert first["sampled"] is True
    assert first["inputs"] == {"age": 30, "email": "u0@example.com"}
    assert first["outputs"] == {"score": 0.5}
    assert lines[1]["inputs"]["age"] == 31


def test_sampling_rate_roughly_respected(tmp_path):
    logger = make(tmp_path, sample_rate=0.2)
    for start in range(0, 5000, 500):
        logger.log_batch(**batch(500, start))
    lines = read_lines(tmp_path / "predictions.jsonl")
    assert len(lines) == logger.written == 5000
    sampled = [line for line in lines if line["sampled"]]
    assert 0.17 < len(sampled) / len(lines) < 0.23
    assert all("inputs" in line and "outputs" in line for line in sampled)
    assert not any("inputs" in line for line in lines if not line["sampled"])


def test_sampling_follows_the_prediction_id_so_a_challengers_line_pairs_with_the_champions(tmp_path):
    """A shadow challenger's answers are logged under the champion's prediction ids: the rows
    sampled for one are exactly those sampled for the other, whatever the batching."""
    logger = make(tmp_path, sample_rate=0.1)
    for start in range(0, 4000, 400):
        logger.log_batch(**batch(400, start))
    ids = [f"p{i}" for i in range(4000)]
    rng = np.random.default_rng(1)
    for chunk in np.array_split(rng.permutation(ids), 37):   # other batches, another order
        logger.log_batch(**batch(len(chunk), prediction_ids=list(chunk), outputs={"score": [0.9] * len(chunk)}),
                         extra={"challenger": "v2"})
    lines = read_lines(tmp_path / "predictions.jsonl")
    champion = {line["prediction_id"] for line in lines if line["sampled"] and "challenger" not in line}
    challenger = {line["prediction_id"] for line in lines if line["sampled"] and line.get("challenger") == "v2"}
    assert champion == challenger
    assert 0.085 < len(champion) / 4000 < 0.115
    # Another process draws another hash key: the ids it samples are not predictable from these.
    other = PredictionLogger(PredictionLogConfig(path=str(tmp_path / "other.jsonl"), sample_rate=0.1),
                             rng=np.random.default_rng(8))
    assert set(np.asarray(ids)[other._sample(ids)]) != champion


def test_metadata_only_by_default(tmp_path):
    logger = make(tmp_path)
    logger.log_batch(**batch(3))
    lines = read_lines(tmp_path / "predictions.jsonl")
    assert [line["prediction_id"] for line in lines] == ["p0", "p1", "p2"]
    assert not any(line["sampled"] or "inputs" in line for line in lines)


def test_redaction(tmp_path):
    logger = make(tmp_path, sample_rate=1.0, redact=["email", "ssn", "secret"])
    logger.log_batch(**batch(1, features={"email": ["a@b.c"], "age": [40], "profile": [{"ssn": "123", "city": "X",
                                                                                         "nested": [{"ssn": 1}]}]},
                              outputs={"score": [0.1], "secret": ["s"]}))
    (line,) = read_lines(tmp_path / "predictions.jsonl")
    assert line["inputs"] == {"email": REDACTED, "age": 40,
                              "profile": {"ssn": REDACTED, "city": "X", "nested": [{"ssn": REDACTED}]}}
    assert line["outputs"] == {"score": 0.1, "secret": REDACTED}
    assert "a@b.c" not in (tmp_path / "predictions.jsonl").read_text()


def test_non_finite_values_are_null(tmp_path):
    logger = make(tmp_path, sample_rate=1.0)
    logger.log_batch(**batch(3, latency_seconds=float("nan"),
                              timestamps=[1714564800.0, float("nan"), None],
                              features={"x": [float("nan"), float("inf"), np.float32(-np.inf)],
                                        "v": [[1.0, float("nan")], {"k": float("-inf")}, np.array([np.nan, 2.0])],
                                        "n": [np.int64(5), np.float64(0.5), b"\x00\x01"]},
                              outputs={"y": [np.nan, 1.0, None]}))
    lines = read_lines(tmp_path / "predictions.jsonl")  # strict parse: no NaN/Infinity tokens
    assert logger.errors == 0 and len(lines) == 3
    assert [line["inputs"]["x"] for line in lines] == [None, None, None]
    assert [line["inputs"]["v"] for line in lines] == [[1.0, None], {"k": None}, [None, 2.0]]
    assert [line["inputs"]["n"] for line in lines] == [5, 0.5, "AAE="]
    assert lines[0]["outputs"]["y"] is None and lines[1]["outputs"]["y"] == 1.0
    assert all(line["latency_seconds"] is None for line in lines)
    assert lines[1]["timestamp"] is None and lines[1]["timestamp_unix"] is None
    assert lines[2]["timestamp"] is None


def test_rotation_bounds_size(tmp_path):
    logger = make(tmp_path, sample_rate=1.0, max_bytes=4000, backup_count=2)
    for start in range(0, 400, 20):
        logger.log_batch(**batch(20, start))
    logger.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 4000
        read_lines(tmp_path / name)  # each file holds whole lines only
    assert logger.written == 400
    # The newest lines are in the live file, the one before in .1, and the oldest were dropped.
    live, newer, older = (read_lines(tmp_path / n) for n in files)
    assert live[-1]["prediction_id"] == "p399"
    assert int(older[-1]["prediction_id"][1:]) + 1 == int(newer[0]["prediction_id"][1:])
    assert int(newer[-1]["prediction_id"][1:]) + 1 == int(live[0]["prediction_id"][1:])
    assert int(older[0]["prediction_id"][1:]) > 0


def test_rotation_without_backups_truncates(tmp_path):
    logger = make(tmp_path, max_bytes=2000, backup_count=0)
    for start in range(0, 200, 10):
        logger.log_batch(**batch(10, start))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
    assert (tmp_path / "predictions.jsonl").stat().st_size <= 2000
    assert read_lines(tmp_path / "predictions.jsonl")[-1]["prediction_id"] == "p199"


def test_appends_to_existing_file(tmp_path):
    make(tmp_path).log_batch(**batch(2))
    make(tmp_path).log_batch(**batch(2, 2))
    assert [line["prediction_id"] for line in read_lines(tmp_path / "predictions.jsonl")] == ["p0", "p1", "p2", "p3"]


def test_thread_safe(tmp_path):
    logger = make(tmp_path, sample_rate=0.5, max_bytes=20_000, backup_count=50)

    def work(t: int) -> None:
        for j in range(20):
            logger.log_batch(**batch(10, start=t * 1000 + j * 10))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.close()
    ids = [line["prediction_id"] for p in tmp_path.iterdir() for line in read_lines(p)]
    assert len(ids) == len(set(ids)) == logger.written == 1600


def test_disabled(tmp_path):
    logger = PredictionLogger(PredictionLogConfig(path=""))
    assert not logger.enabled
    logger.log_batch(**batch(5))
    logger.close()
    assert logger.written == 0 and logger.errors == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs permissions that root ignores")
def test_unwritable_directory_counts_errors(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    logger = make(tmp_path, path=str(locked / "sub" / "predictions.jsonl"))
    assert logger.enabled
    logger.log_batch(**batch(3))
    logger.log_batch(**batch(2))
    assert logger.written == 0 and logger.errors == 5


def test_unwritable_path_counts_errors(tmp_path):
    # A directory where the file should be: fails for root too.
    (tmp_path / "predictions.jsonl").mkdir()
    logger = make(tmp_path, sample_rate=1.0)
    logger.log_batch(**batch(3))
    assert logger.written == 0 and logger.errors == 3
    os.rmdir(tmp_path / "predictions.jsonl")  # the disk recovers: writing resumes
    logger.log_batch(**batch(2))
    assert logger.written == 2 and logger.errors == 3
    assert len(read_lines(tmp_path / "predictions.jsonl")) == 2


def test_full_disk_mid_write(tmp_path, monkeypatch):
    logger = make(tmp_path)
    logger.log_batch(**batch(1))

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(logger._file, "_fh", Full())
    logger.log_batch(**batch(4))
    assert logger.written == 1 and logger.errors == 4


def test_closed_logger_is_a_no_op(tmp_path):
    logger = make(tmp_path)
    logger.close()
    logger.log_batch(**batch(2))
    assert logger.written == 0 and logger.errors == 0


def test_mismatched_column_is_left_out(tmp_path):
    logger = make(tmp_path, sample_rate=1.0)
    logger.log_batch(**batch(2, features={"ok": [1, 2], "short": [1]}))
    lines = read_lines(tmp_path / "predictions.jsonl")
    assert [line["inputs"] for line in lines] == [{"ok": 1}, {"ok": 2}]
    assert not math.isnan(lines[0]["timestamp_unix"])


def test_redaction_ignores_case(tmp_path):
    """`redact: [ssn]` hides SSN and Ssn too, at the top and nested; `redact: [Email]` hides email."""
    logger = make(tmp_path, sample_rate=1.0, redact=["ssn", "Email"])
    logger.log_batch(**batch(1, features={"SSN": ["123-45-6789"], "email": ["a@b.c"], "age": [40],
                                          "profile": [{"Ssn": "987", "EMAIL": "x@y.z", "city": "X"}]},
                              outputs={"score": [0.1]}))
    logger.close()
    (line,) = read_lines(tmp_path / "predictions.jsonl")
    assert line["inputs"] == {"SSN": REDACTED, "email": REDACTED, "age": 40,
                              "profile": {"Ssn": REDACTED, "EMAIL": REDACTED, "city": "X"}}
    text = (tmp_path / "predictions.jsonl").read_text()
    assert "123-45-6789" not in text and "987" not in text and "@" not in text


def test_quarantine_redaction_ignores_case():
    """The guard's quarantine log redacts with the prediction log's names, in any case too."""
    from inferwatch.ingest.events import EventBatch
    from inferwatch.monitors.guard.evaluate import BatchCheck
    from inferwatch.monitors.guard.quarantine import quarantine_lines

    batch_ = EventBatch(n=1, features={"SSN": ["123-45-6789"], "age": [40]}, outputs={}, prediction_ids=["q1"],
                        timestamps=[1714564800.0], model_version="1", source="push")
    check = BatchCheck(n=1, counts=np.zeros((2, 4), dtype=np.int64), failed=np.array([True]),
                       flags=np.zeros((2, 1), dtype=np.uint8), cells=[("age", "out_of_range", np.array([True]))])
    lines, lost = quarantine_lines(batch_, check, model="m", version="1", redact=frozenset(["ssn"]))
    assert lost == 0
    (line,) = [json.loads(raw) for raw in lines]
    assert line["features"] == {"SSN": REDACTED, "age": 40}
