"""check-patches for one release of every series (the newest in its range that this
machine's Go proxy can build), with the control: the series applies strictly, vets,
builds, its tests and upstream's pass in the line's Go, and the series' own tests fail on
the unpatched tree. Native releases run the native checks. The full matrix (every pinned
release) is the release-time check: `python build.py check-patches --all --control`
(see docs/support-matrix.md)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp import config, patch
from kube_router_sctp.validate import semver_of
from tests.support import env
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]


def releases_per_series() -> list[tuple[str, list[str]]]:
    """Each series with its pinned releases, newest first."""
    releases = config.load().pins.releases
    out = []
    for series in patch.load_index():
        matching = sorted((v for v in releases if series.matches(semver_of(v))), key=semver_of, reverse=True)
        if matching:
            out.append((series.name, matching))
    return out


def ca_bundle() -> list[str]:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return ["--ca-bundle", candidate]
    return []


# check-patches' own verdict when the Go proxy refused one of a release's modules: a
# release that needs one cannot be built on this machine, whatever the series does.
PROXY_REFUSAL = re.compile(r"check-patches could not build (.*) — ")


def check_patches(version: str, table: Path, upstream: Upstream) -> subprocess.CompletedProcess[str]:
    return env.run_cli(
        "check-patches", "--versions", version, "--control", "--base-family", "debian", *ca_bundle(),
        *upstream.args(version), "--table", str(table), timeout=3600,
    )  # fmt: skip


@pytest.mark.parametrize(("series", "versions"), releases_per_series(), ids=[s for s, _ in releases_per_series()])
def test_series_passes_check_patches(series: str, versions: list[str], tmp_path: Path, upstream: Upstream) -> None:
    """The newest release of the series that this machine can build passes every check.

    A release is passed over only when the Go proxy refused one of its modules (the
    refusal is named in the skip); any other failure fails the test."""
    refused = []
    for version in versions:
        table = tmp_path / f"{version}.md"
        result = check_patches(version, table, upstream)
        refusal = PROXY_REFUSAL.search(result.stderr)
        if result.returncode != 0 and refusal:
            refused.append(refusal.group(1))
            continue
        assert result.returncode == 0, result.stderr[-4000:]
        row = next(line for line in table.read_text().splitlines() if line.startswith(f"| {version} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2:6] == ["ok", "ok", "ok", "ok"], row
        native = "(native)" in cells[1]
        assert cells[6] == ("-" if native else "ok"), row
        return
    pytest.skip(f"no release of series {series} can be built on this machine: " + "; ".join(refused))


def test_a_broken_series_fails_check_patches(tmp_path: Path, upstream: Upstream) -> None:
    """A series whose test cannot pass must turn the table red (the check can fail)."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(env.PROJECT / "patches", project / "patches")
    shutil.copytree(env.PROJECT / "images", project / "images")
    shutil.copytree(env.PROJECT / "ipvsadm", project / "ipvsadm")
    series = project / "patches" / "kube-router" / "v0.3"
    tests = series / "0007-tests-sctp-unit-tests.patch"
    text = tests.read_text()
    tests.write_text(text.replace('"sctp"', '"sctp-broken"', 1))
    assert tests.read_text() != text
    result = env.run_cli(
        "check-patches", "--versions", "v0.3.2", "--base-family", "debian", *upstream.args("v0.3.2"),
        env={"KUBE_ROUTER_SCTP_PROJECT_DIR": str(project)}, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 12  # PatchCheckFailed (was 5, shared with PatchError)
    assert "tests=FAIL" in result.stderr
