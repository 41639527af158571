"""Linters run as tests, so CI fails on them: ruff, mypy, actionlint, zizmor, hadolint,
and shellcheck on the shell that runs inside the guests (resources/guest/) and on the host
(.ci/run, scripts/*.sh).

Each Python-side tool is a pinned PyPI package of the project's test extra; shellcheck
is Debian's (scripts/setup-host.sh installs it). A deliberately broken workflow,
Dockerfile and guest script show the linters can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kube_router_sctp import config, plan, render

PROJECT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return str(path)


def run(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=600)


def test_ruff_check() -> None:
    result = run(tool("ruff"), "check", "src", "tests", "build.py", "scripts", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run(tool("ruff"), "format", "--check", "src", "tests", "build.py", "scripts", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run(tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_exist() -> None:
    assert {w.name for w in WORKFLOWS} >= {"ci.yml", "release.yml"}


def test_actionlint() -> None:
    result = run(tool("actionlint"), *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor() -> None:
    result = run(tool("zizmor"), "--offline", "--min-severity", "low", *map(str, WORKFLOWS))
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN_WORKFLOW = """name: broken
on: issues
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.issue.title }}"
      - run: echo ${{ steps.nothing.outputs.x }
"""


def test_a_broken_workflow_fails_the_linters(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "broken.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(BROKEN_WORKFLOW)
    assert run(tool("actionlint"), str(workflow), cwd=tmp_path).returncode != 0
    zizmor = run(tool("zizmor"), "--offline", str(workflow), cwd=tmp_path)
    assert zizmor.returncode != 0
    assert "template-injection" in zizmor.stdout + zizmor.stderr
    assert "unpinned-uses" in zizmor.stdout + zizmor.stderr


def rendered_dockerfiles() -> list[tuple[str, str]]:
    """One rendered Dockerfile per family and release line (and the native series)."""
    settings = config.load()
    lines = settings.pins.lines
    releases = settings.pins.releases
    from kube_router_sctp.validate import semver_of

    out = []
    for family in config.FAMILIES:
        for line in lines:
            clauses = [c.strip() for c in line.versions.split(",")]
            versions = [v for v in releases if all(semver_of(v).match(c) for c in clauses)]
            version = max(versions, key=semver_of)
            built = plan.build(config.load({"build.base-family": family, "build.kube-router-version": version}))
            out.append(
                (f"{family}-{line.name}-{version}", render.render(built, render.configured_bases(built)).dockerfile)
            )
    return out


@pytest.mark.parametrize(("name", "text"), rendered_dockerfiles(), ids=lambda v: v if len(v) < 60 else "")
def test_hadolint_on_every_rendered_dockerfile(name: str, text: str, tmp_path: Path) -> None:
    dockerfile = tmp_path / f"Dockerfile.{name}"
    dockerfile.write_text(text)
    result = run(tool("hadolint"), "--config", str(PROJECT / ".hadolint.yaml"), str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_dockerfile_fails_hadolint(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm\nRUN cd /src && make\nRUN curl https://x | sh\nMAINTAINER me\n")
    result = run(tool("hadolint"), "--config", str(PROJECT / ".hadolint.yaml"), str(dockerfile))
    assert result.returncode != 0
    assert "DL3003" in result.stdout and "DL4000" in result.stdout


def test_release_matrix_names_pinned_releases() -> None:
    text = (PROJECT / ".github" / "workflows" / "release.yml").read_text()
    matrix = re.search(r"kube-router: \[([^\]]+)\]", text)
    assert matrix is not None
    versions = [v.strip() for v in matrix[1].replace("\n", " ").split(",")]
    pinned = config.load().pins.releases
    assert versions and all(v in pinned for v in versions), set(versions) - set(pinned)


GUEST_SCRIPTS = sorted((PROJECT / "src" / "kube_router_sctp" / "resources" / "guest").glob("*.sh"))


def shellcheck() -> str:
    path = shutil.which("shellcheck")
    if not path:
        pytest.fail("shellcheck is not installed: apt-get install shellcheck (scripts/setup-host.sh does)")
    return path


def test_guest_scripts_are_files_and_shellcheck_clean() -> None:
    assert {p.name for p in GUEST_SCRIPTS} >= {
        "smoke-check.sh",
        "kernelsmoke-init.sh",
        "dockerhost-init.sh",
        "dockerhost-initrd.sh",
    }
    # POSIX sh: the guests run busybox's or dash's sh, never bash.
    result = run(shellcheck(), "--shell=sh", "--severity=style", *map(str, GUEST_SCRIPTS))
    assert result.returncode == 0, result.stdout + result.stderr


HOST_SCRIPTS = [PROJECT / ".ci" / "run", *sorted((PROJECT / "scripts").glob("*.sh"))]


def test_host_scripts_are_shellcheck_clean() -> None:
    """The shell that runs on the host (CI's entry point, the host set-up) is bash."""
    assert len(HOST_SCRIPTS) >= 2
    result = run(shellcheck(), "--shell=bash", "--severity=style", *map(str, HOST_SCRIPTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_guest_script_fails_shellcheck(tmp_path: Path) -> None:
    script = tmp_path / "broken.sh"
    script.write_text('#!/bin/sh\nfor f in $(ls /dev); do echo $f; done\n[[ -n "$x" ]] && echo yes\n')
    result = run(shellcheck(), "--shell=sh", str(script))
    assert result.returncode != 0
    assert "SC2045" in result.stdout and "SC3010" in result.stdout
