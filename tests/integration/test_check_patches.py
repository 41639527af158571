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


FLAKY_TEST = """\
Description: tests: make an upstream test fail {what}
 Made by the suite: check-patches must run a package whose upstream test
 failed again, pass the cell when a later try passes and name the test,
 and fail it when every try fails.
Origin: vendor
Forwarded: not-needed
Last-Update: 2026-11-30
---
diff --git a/pkg/utils/pod_cidr_test.go b/pkg/utils/pod_cidr_test.go
--- a/pkg/utils/pod_cidr_test.go
+++ b/pkg/utils/pod_cidr_test.go
@@ -17,2 +17,7 @@
 func Test_GetPodCidrFromCniSpec(t *testing.T) {{
+\tmarker := os.TempDir() + "/krs-flaky-upstream"
+\tif _, err := os.Stat(marker); err != nil || {always} {{
+\t\t_ = ioutil.WriteFile(marker, nil, 0o644)
+\t\tt.Fatal("this run fails")
+\t}}
 \ttestcases := []struct {{
"""


@pytest.mark.parametrize("always", [False, True], ids=["fails-once", "fails-always"])
def test_an_upstream_test_that_fails_is_tried_again(always: bool, tmp_path: Path, upstream: Upstream) -> None:
    """A package that fails in an upstream test (one the series does not add) runs twice
    more, whole: a pass on a later try passes the cell and names the test as flaky; three
    failures fail it, showing the first run."""
    import shutil

    project = tmp_path / "project"
    for part in ("patches", "images", "ipvsadm"):
        shutil.copytree(env.PROJECT / part, project / part)
    what = "on every run" if always else "on its first run only"
    patch_file = project / "patches" / "kube-router" / "v0.3" / "0008-tests-flaky-upstream-test.patch"
    patch_file.write_text(FLAKY_TEST.format(what=what, always="true" if always else "false"))
    table = tmp_path / "table.md"
    result = env.run_cli(
        "check-patches", "--versions", "v0.3.2", "--base-family", "debian", *upstream.args("v0.3.2"),
        "--table", str(table), env={"KUBE_ROUTER_SCTP_PROJECT_DIR": str(project)}, timeout=3600,
    )  # fmt: skip
    flaky = "flaky upstream test in ./pkg/utils/: Test_GetPodCidrFromCniSpec (failed, then passed on try 2 of 3)"
    if always:
        assert result.returncode == 12, result.stderr[-3000:]
        assert "tests=FAIL" in result.stderr and flaky not in result.stderr
        assert "this run fails" in result.stderr and "(the package failed twice more, whole)" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "tests=ok" in result.stderr and flaky in result.stderr, result.stderr[-3000:]
