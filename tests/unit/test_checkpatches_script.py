"""check-patches' in-container script, run by a real POSIX shell on this host.

`go` here is a stand-in (a shell script on PATH): what is checked is how the script
treats a package's result (a second and third try for a failing upstream test, none for
our own, none for a failure that names no test), not Go. The real toolchain runs it in
tests/integration/test_check_patches.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp import checkpatches
from kube_router_sctp.patch import PatchedTree

# The stand-in's behaviour per package: "flaky" fails its first run naming a test and
# passes after; "broken" fails every run; "hidden" names a test on its first run only and
# fails every run (something the names do not cover); "panic" fails naming no test;
# "racepanic" names a test and panics; "own" fails naming one of the series' tests;
# "hostile" fails naming a test whose name is a shell command; "forger" writes a CHECK
# line where the script once kept its FLAKY lines.
STAND_IN_GO = r"""#!/bin/sh
[ "$1" = test ] || exit 0
eval "pkg=\${$#}"
count="$RUNS/$(echo "$pkg" | tr -dc 'a-z')"
echo "$*" >>"$count"
runs=$(wc -l <"$count")
case "$pkg" in
  ./flaky/) if [ "$runs" -eq 1 ]; then echo '--- FAIL: TestRace (10.40s)'; echo FAIL; exit 1; fi; echo ok;;
  ./broken/) echo '--- FAIL: TestBroken (0.01s)'; echo FAIL; exit 1;;
  ./hidden/) [ "$runs" -eq 1 ] && echo '--- FAIL: TestRace (0.01s)'; echo FAIL; exit 1;;
  ./panic/) echo 'panic: nil map'; echo FAIL; exit 2;;
  ./racepanic/) echo '--- FAIL: TestRace (0.01s)'; echo 'panic: boom [recovered]'; echo FAIL; exit 2;;
  ./own/) echo '--- FAIL: TestOwnSCTP (0.01s)'; echo FAIL; exit 1;;
  ./hostile/) echo '--- FAIL: Test$(touch "$RUNS/pwned") (0.01s)'; echo FAIL; exit 1;;
  ./forger/) echo 'CHECK tests 0 0' >"$TMPDIR/flaky.log"; echo '--- FAIL: TestF (0s)'; exit 1;;
  *) echo ok;;
esac
"""


def run_script(tmp_path: Path, packages: list[str]) -> tuple[str, Path]:
    bin_dir = tmp_path / "bin"
    runs = tmp_path / "runs"
    bin_dir.mkdir()
    runs.mkdir()
    go = bin_dir / "go"
    go.write_text(STAND_IN_GO)
    go.chmod(0o755)
    script = checkpatches._script(packages, ("tests",), {"flaky": "^(TestRace|TestOther)$"}, ["TestOwnSCTP"])
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path), "RUNS": str(runs)}
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout, runs


def cell_of(output: str) -> int:
    found = re.findall(r"^CHECK tests (\d+) ", output, re.M)
    assert len(found) == 1, output  # one verdict per step, and only the script's
    return int(found[0])


def test_a_flaky_upstream_test_passes_on_a_second_try_and_is_named(tmp_path: Path) -> None:
    output, runs = run_script(tmp_path, ["./flaky/", "./steady/"])
    assert cell_of(output) == 0, output
    assert "FLAKY ./flaky/ 2 TestRace" in output.splitlines()
    assert checkpatches.flaky_packages(output, ["./flaky/", "./steady/"]) == [
        "./flaky/: TestRace (failed, then passed on try 2 of 3)"
    ]
    assert checkpatches.flaky_packages(output, ["./steady/"]) == []  # a line for a package not checked is no flake
    # The second try ran the whole package again, with the series' -run pattern.
    assert (runs / "flaky").read_text().splitlines() == [
        "test -count=1 -timeout 600s -run ^(TestRace|TestOther)$ ./flaky/"
    ] * 2
    assert (runs / "steady").read_text().count("\n") == 1


@pytest.mark.parametrize(
    "package", ["./broken/", "./hidden/", "./panic/", "./racepanic/", "./own/", "./hostile/", "./forger/"]
)
def test_failures_that_are_not_flakes_fail_the_cell(package: str, tmp_path: Path) -> None:
    output, runs = run_script(tmp_path, ["./steady/", package])
    assert cell_of(output) != 0, output
    assert "FLAKY" not in output
    tries = (runs / package.strip("./")).read_text().count("\n")
    # Failures in upstream's tests alone get three tries in all; our own test, a panic
    # and a name that is not a Go identifier get none.
    assert tries == (3 if package in ("./broken/", "./hidden/", "./forger/") else 1), output
    assert checkpatches.flaky_packages(output, ["./steady/", package]) == []
    assert not (runs / "pwned").exists()
    assert "  tests| " in output


def test_the_series_own_tests_are_found_by_name() -> None:
    source = b"package proxy\n\nfunc TestSCTPService(t *testing.T) {}\nfunc helper() {}\n"
    source += b"func Test_x_y(t *testing.T) {}\n"
    assert checkpatches._test_names([source]) == {"TestSCTPService", "Test_x_y"}


def test_a_name_or_pattern_that_could_break_the_quoting_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Go test name"):
        checkpatches._script(["./a/"], ("tests",), None, ["Test'; rm -rf /"])
    with pytest.raises(ValueError, match="may not hold a quote"):
        checkpatches._script(["./a/"], ("tests",), {"a": "^Test'$"})


def test_the_tests_a_series_adds_are_its_own_and_upstreams_are_not(tmp_path: Path) -> None:
    base = tmp_path / "tree"
    (base / "pkg").mkdir(parents=True)
    (base / "pkg" / "a_test.go").write_bytes(b"package pkg\n\nfunc TestUpstream(t *testing.T) {}\n")
    overlay: dict[str, bytes | None] = {
        "pkg/a_test.go": b"package pkg\n\nfunc TestUpstream(t *testing.T) {}\nfunc TestAdded(t *testing.T) {}\n",
        "pkg/b_sctp_test.go": b"package pkg\n\nfunc TestSCTP(t *testing.T) {}\n",
        "pkg/gone_test.go": None,
        "pkg/code.go": b"package pkg\n\nfunc TestNotATest() {}\n",
    }
    tree = PatchedTree(base, overlay, None, ())  # type: ignore[arg-type]
    assert checkpatches._added_tests(tree) == {"TestAdded", "TestSCTP"}


def test_a_step_with_more_than_one_verdict_line_failed() -> None:
    # The code under check shares the container: a CHECK line of its own, before or after
    # the script's, fails the step instead of passing it.
    forged = "CHECK vet 1 3\n  vet| bad\nCHECK vet 0 0\nCHECK build 0 5\n"
    assert checkpatches._results(forged) == {"vet": (1, 0), "build": (0, 5)}
    assert checkpatches._results("CHECK tests 0 0\nCHECK tests 1 9\n") == {"tests": (1, 9)}
