"""The README works as written: its quick start block runs, its Full stack section names everything
the compose file requires, its `inferwatch actions` command names what the example file needs, and
`make demo` installs only what the demo needs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from conftest import free_ports

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
QUICKSTART_MARKER = "<!-- quickstart"


def section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"the README has no '## {title}' section"
    return match.group(1)


def quickstart_block() -> str:
    """The ```sh block right after the quick start marker."""
    at = README.index(QUICKSTART_MARKER)
    match = re.compile(r"```sh\n(.*?)```", re.S).search(README, at)
    assert match, "no ```sh block after the quick start marker"
    return match.group(1)


def host_files_compose_requires() -> set[str]:
    """Host paths (relative to the repository) of the files a service reads through a ``*_file``
    key of its inline config, mapped through its bind mounts: files the user must create."""
    required = set()
    for name, service in COMPOSE["services"].items():
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                mounts[PurePosixPath(target)] = source[2:]
        for ref in service.get("configs", []):
            content = COMPOSE["configs"][ref["source"]]["content"]
            for container_path in re.findall(r"\w+_file:\s*([/\w.\-]+)", content):
                path = PurePosixPath(container_path)
                for target, source in mounts.items():
                    if target in path.parents:
                        required.add(f"{source}/{path.relative_to(target)}")
    return required


def test_full_stack_section_names_every_required_variable_file_and_address():
    text = section("Full stack")
    variables = set(re.findall(r"\$\{(\w+):\?", COMPOSE_TEXT))
    files = host_files_compose_requires()
    assert variables >= {"GRAFANA_ADMIN_PASSWORD", "INFERWATCH_WRITE_TOKEN"}
    assert "alertmanager/secrets/actions-token" in files
    missing = sorted(v for v in variables | files if v not in text)
    assert not missing, f"required by docker-compose.yml, not named in the README's Full stack: {missing}"
    assert "docker compose up" in text
    published = {port.split(":")[0] for service in COMPOSE["services"].values() for port in service.get("ports", [])}
    unnamed = sorted(port for port in published if f"localhost:{port}" not in text)
    assert not unnamed, f"published ports without their address in the Full stack section: {unnamed}"


def test_the_actions_service_does_not_restart_loop_without_its_token():
    """Its comment says that without the token file it does not start and nothing else is
    affected: the anchor's `unless-stopped` would restart it forever."""
    actions = COMPOSE["services"]["actions"]
    assert actions["restart"] == "no"
    assert all(service.get("restart") == "unless-stopped"
               for name, service in COMPOSE["services"].items() if name not in ("actions", "traffic"))


def test_the_actions_command_names_what_the_example_file_needs():
    example = (REPO / "examples" / "actions.yaml").read_text(encoding="utf-8")
    values = re.sub(r"(^|\s)#.*", "", example)   # the comments explain ${VAR}; the values use it
    needed = set(re.findall(r"\$\{(\w+)\}", values))   # no default: the file fails without it
    port = yaml.safe_load(re.sub(r"\$\{[^}]*\}", "x", example))["port"]
    text = section("Alert-triggered actions")
    assert "inferwatch actions --config examples/actions.yaml" in text
    assert needed and all(name in text for name in needed), needed
    assert str(port) in text


def test_make_demo_installs_only_the_package_and_shows_progress(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert plan.returncode == 0, plan.stderr
    installs = [line for line in plan.stdout.splitlines() if "pip install" in line]
    assert installs, plan.stdout
    assert all("[test" not in line and "--quiet" not in line and "-q " not in line for line in installs), installs


def test_make_tests_duration_says_what_machine_it_was_measured_on():
    text = section("Development")
    assert re.search(r"measured on", text, flags=re.I), "say what machine `make test`'s time was measured on"



@pytest.mark.skipif(shutil.which("curl") is None, reason="the quick start uses curl")
def test_the_quick_start_block_runs_as_written(tmp_path):
    """The block, verbatim but for its three port numbers (free ones, so nothing here collides),
    run by bash in a temporary directory whose .venv is this interpreter's; everything it starts
    is stopped (its process group)."""
    block = quickstart_block()
    assert "readyz" in block and "sleep 2" not in block   # waits on readiness, not on luck
    upstream, proxy, admin = free_ports(3)
    script = block
    for default, port in (("8081", upstream), ("8080", proxy), ("9180", admin)):
        assert default in script
        script = script.replace(default, str(port))
    assert (Path(sys.prefix) / "bin" / "inferwatch").exists(), "run the tests from the project's venv"
    (tmp_path / ".venv").symlink_to(sys.prefix)
    # Output to files: the servers it starts in the background keep a pipe open until stopped.
    with open(tmp_path / "out", "w") as out_file, open(tmp_path / "err", "w") as err_file:
        process = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, stdout=out_file, stderr=err_file,
                                   start_new_session=True)
        try:
            process.wait(timeout=120)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)   # the model server and the sidecar it started
            except ProcessLookupError:
                pass
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert process.returncode == 0, out + err
    assert '"status": "ready"' in out or '"status":"ready"' in out, out
    assert '"predictions"' in out, out
    assert re.search(r"^inferwatch_requests_total\{.*code=\"200\".*\} 1\.0$", out, flags=re.M), out
