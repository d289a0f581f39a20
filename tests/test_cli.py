import subprocess
import sys

import inferwatch


def run(*args):
    return subprocess.run([sys.executable, "-m", "inferwatch", *args], capture_output=True, text=True, timeout=60)


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"inferwatch {inferwatch.__version__}"


def test_help_everywhere():
    for args in ([], ["run"], ["check-config"], ["demo"], ["hash-password"], ["profile"], ["job"], ["actions"],
                 ["rules"], ["rules", "render"], ["rules", "check"]):
        result = run(*args, "--help")
        assert result.returncode == 0 and "usage: inferwatch" in result.stdout, args


def test_check_config_ok(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model: {name: fraud, version: '2'}\nupstream: {url: 'http://m:8000'}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0
    assert f"{path}: OK" in result.stdout and "fraud version 2" in result.stdout
    assert "drift:       off (no reference" in result.stdout   # says why no drift would be evaluated
    path.write_text("reference: {warmup_events: 500}\ndrift: {interval_seconds: 30}\n")
    result = run("check-config", "--config", str(path))
    assert "drift:       against the first 500 events, every 30s (bonferroni at alpha 0.01)" in result.stdout


def test_check_config_summarises_outputs_and_segments():
    result = run("check-config", "--config", "examples/inferwatch.yaml")
    assert result.returncode == 0, result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines()}
    assert lines["outputs"] == ("outputs:     score (score, 4 bands), price (value, rule negative_price), "
                                "decision (class, classes approve, refer, decline); others typed from traffic")
    assert lines["segments"].startswith("segments:    region (10 values each")


def test_check_config_reports_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("proxy: {port: eighty}\nwindow: {max_evnts: 5}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"{path}:proxy.port: expected integer, got 'eighty'" in lines
    assert any(line.startswith(f"{path}:window.max_evnts: unknown key") for line in lines)


def test_check_config_missing_file(tmp_path):
    result = run("check-config", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "file not found" in result.stderr


def test_hash_password():
    result = run("hash-password", "--password", "s3cret")
    assert result.returncode == 0 and result.stdout.startswith("pbkdf2_sha256$")


def test_run_with_bad_config_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("upstream: {url: 42}\n")
    result = run("run", "--config", str(path))
    assert result.returncode == 2 and "upstream.url" in result.stderr


def test_check_config_on_an_actions_file_points_to_the_actions_check(tmp_path):
    """The shipped actions file needs INFERWATCH_ACTIONS_TOKEN: recognised by its shape all the same."""
    result = run("check-config", "--config", "examples/actions.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "examples/actions.yaml: this is an actions file (for `inferwatch actions`), not a sidecar configuration; "
        "check it with: inferwatch actions --config examples/actions.yaml --check"]
    path = tmp_path / "actions.yaml"
    path.write_text("port: 9190\nworkers: 2\nmax_queue_items: 10\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2 and "inferwatch actions --config" in result.stderr
    # the sidecar's own actions section is not mistaken for one
    path.write_text("actions:\n  actions: [{name: retrain, matchers: [a=b], command: [true]}]\n")
    assert run("check-config", "--config", str(path)).returncode == 0
