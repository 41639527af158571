"""check-patches for one release of every series (the newest in its range), with the
control: the series applies strictly, vets, builds, its tests and upstream's pass in the
line's Go, and the series' own tests fail on the unpatched tree. Native releases run the
native checks. The full matrix (every pinned release) is the release-time check:
`python build.py check-patches --all --control` (see docs/support-matrix.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from kube_router_sctp import config, patch
from kube_router_sctp.goproxy import proxy_urls
from kube_router_sctp.validate import semver_of
from tests.conftest import upstream_source_for
from tests.support import env

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]


def newest_per_series() -> list[tuple[str, str]]:
    releases = config.load().data["kube-router"]["releases"]
    out = []
    for series in patch.load_index():
        matching = [v for v in releases if series.matches(semver_of(v))]
        if matching:
            out.append((series.name, max(matching, key=semver_of)))
    return out


def ca_bundle() -> list[str]:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return ["--ca-bundle", candidate]
    return []


def dependencies_served(version: str) -> str | None:
    """None when the Go proxy serves the release's module dependencies; else why not.

    Probes go.mod's requirements that carry pseudo-versions (the ones a proxy may not have)."""
    source = upstream_source_for(version)
    if not source or not Path(source).exists():
        return None
    import subprocess

    go_mod = subprocess.run(["git", f"--git-dir={source}", "show", f"{version}:go.mod"], capture_output=True, text=True)
    if go_mod.returncode != 0:
        return None
    proxies = proxy_urls(config.load().mirrors.go_proxy)
    for module, pseudo in re.findall(r"^\s+(\S+) (v\S+-\d{14}-[0-9a-f]{12})", go_mod.stdout, re.M):
        for proxy in proxies[:1]:
            response = requests.get(f"{proxy}/{module}/@v/{pseudo}.info", timeout=30)
            if response.status_code in (403, 404, 410):
                return f"the Go proxy does not serve {module}@{pseudo} (HTTP {response.status_code})"
    return None


@pytest.mark.parametrize(("series", "version"), newest_per_series(), ids=lambda v: v)
def test_series_passes_check_patches(series: str, version: str, tmp_path: Path) -> None:
    missing = dependencies_served(version)
    if missing:
        pytest.skip(f"{version} cannot be built on this machine: {missing}")
    source = upstream_source_for(version)
    table = tmp_path / "table.md"
    result = env.run_cli(
        "check-patches", "--versions", version, "--control", "--base-family", "debian", *ca_bundle(),
        *(["--kube-router-source", source] if source else []), "--table", str(table), timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    row = next(line for line in table.read_text().splitlines() if line.startswith(f"| {version} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:6] == ["ok", "ok", "ok", "ok"], row
    native = "(native)" in cells[1]
    assert cells[6] == ("-" if native else "ok"), row


def test_a_broken_series_fails_check_patches(tmp_path: Path) -> None:
    """A series whose test cannot pass must turn the table red (the check can fail)."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(env.PROJECT / "patches", project / "patches")
    shutil.copytree(env.PROJECT / "images", project / "images")
    series = project / "patches" / "kube-router" / "v0.3"
    tests = series / "0007-tests-sctp-unit-tests.patch"
    text = tests.read_text()
    tests.write_text(text.replace('"sctp"', '"sctp-broken"', 1))
    assert tests.read_text() != text
    source = upstream_source_for("v0.3.2")
    result = env.run_cli(
        "check-patches", "--versions", "v0.3.2", "--base-family", "debian",
        *(["--kube-router-source", source] if source else []),
        env={"KUBE_ROUTER_SCTP_PROJECT_DIR": str(project)}, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 5
    assert "tests=FAIL" in result.stderr
