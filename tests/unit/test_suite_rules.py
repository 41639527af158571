"""The suite's own rules, checked by running it: upstream source comes from the user's
configuration as for the main command; under CI=true its absence fails the run with one
line saying how to configure it; otherwise the skips are counted in the run's last lines;
the after-suite checks can fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import after_suite, env

PROJECT = Path(__file__).resolve().parents[2]
NEEDS_SOURCE = "tests/faults/test_hostile_input.py::test_moved_tag_is_refused_unless_the_pin_is_updated"


def run_pytest(*args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    # The isolated test environment names an empty user config: no source is configured.
    child_env = {k: v for k, v in os.environ.items() if k != "KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE"}
    child_env["CI"] = "true" if ci else "false"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=PROJECT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ci_without_a_source_fails_the_run_with_one_line_saying_how_to_configure_it() -> None:
    result = run_pytest(NEEDS_SOURCE, ci=True)
    assert result.returncode != 0, result.stdout[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "need kube-router source" in line]
    assert len(lines) == 1, result.stdout[-2000:]
    assert "kube-router-source" in lines[0] and "KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE" in lines[0]
    assert "passed" not in result.stdout  # nothing ran


def test_a_run_without_a_source_says_so_in_its_last_lines() -> None:
    result = run_pytest(NEEDS_SOURCE, ci=False)
    assert result.returncode == 0, result.stdout[-2000:]
    tail = result.stdout.strip().splitlines()[-3:]
    assert any("1 test(s) skipped for lack of kube-router source" in line for line in tail), tail
    assert any("KUBE_ROUTER_SCTP_KUBE_ROUTER_SOURCE" in line for line in tail), tail


def test_the_release_tag_check_fails_on_a_tag_without_a_passed_smoke(monkeypatch) -> None:
    report = {"stages": {"promote": {"tags": {"elsewhere:5000/x/kube-router:v0.3.2-sctp.1": "sha256:0"}}}}
    monkeypatch.setattr(env, "SESSION_PUSHES", [{"push": "elsewhere:5000/x", "report": report}])
    monkeypatch.setattr(env, "CLI_RUNS", [])
    problems = after_suite.problems()
    assert problems == [
        "elsewhere:5000/x: release tags ['elsewhere:5000/x/kube-router:v0.3.2-sctp.1'] without a passed smoke test"
    ]
