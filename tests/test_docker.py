"""The image is built as docs say: dependencies constrained, a health check, the base documented.

There is no Docker engine here, so the Dockerfile is read as text: what it copies exists and is
let through .dockerignore, and every runtime dependency of pyproject.toml is pinned in
constraints.txt (the file the image build installs with).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_runtime_dependency_is_pinned_in_the_constraints_the_image_uses():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pinned[_name(name)] = version
    missing = sorted({_name(r) for r in project["dependencies"]} - set(pinned))
    assert not missing, f"runtime dependencies not pinned in constraints.txt: {missing}"
    assert "pip install -c constraints.txt" in DOCKERFILE


def test_the_image_has_a_health_check_on_readyz():
    check = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*CMD (.*)$", DOCKERFILE, re.M)
    assert check and "/readyz" in check.group(1)


def test_the_base_image_is_an_argument_and_why_it_is_not_a_digest_is_said():
    assert "ARG BASE_IMAGE=" in DOCKERFILE and "FROM ${BASE_IMAGE}" in DOCKERFILE
    assert "digest" in DOCKERFILE


def test_what_the_dockerfile_copies_exists_and_passes_dockerignore():
    ignored = (REPO / ".dockerignore").read_text()
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
                assert f"!{source.rstrip('/')}" in ignored or f"!{source}" in ignored, source
