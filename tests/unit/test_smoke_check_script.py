"""The smoke check's own logic, run by ``sh`` as a guest runs it, against stand-ins for the
image's programs (named as such: shell scripts that print what ipvsadm and friends print).
What the real programs do on a real kernel is the integration tests' part
(tests/integration/test_kernels.py, test_smoke_gate.py); here: that the check reads their
output right, passes a good table and names what a bad one lacks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kube_router_sctp import smoke

GOOD = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.254.125.172:32001 rr
  -> 172.20.1.6:32001             Masq    1      0          0
UDP  10.254.125.172:32002 rr
  -> 172.20.1.6:32002             Masq    1      0          0
SCTP 10.254.125.172:32000 rr
  -> 172.20.1.6:32000             Masq    1      0          0
"""


def stand_ins(directory: Path, table: str) -> None:
    """Stand-ins for the image's programs: versions on the first of several lines, and an
    ``ipvsadm -Ln`` that prints ``table`` (every other call succeeds silently)."""
    (directory / "table").write_text(table)
    programs = {
        "kube-router": 'echo "Running kube-router version v0.3.2-sctp.2-debian, built on now, go1.19"; echo more',
        "gobgp": 'echo "gobgp version master"; echo more',
        "ipvsadm": (
            'case "$*" in --version) echo "ipvsadm v1.31 2019/12/24 (compiled with popt)"; echo more ;;'
            f" -Ln) cat {directory}/table ;; esac"
        ),
        "ipset": 'case "$1" in list) echo "Name: krs-smoke" ;; esac',
        "iptables": "true",
    }
    for name, body in programs.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


def run_check(tmp_path: Path, table: str) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    assert sh is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins(bin_dir, table)
    script = tmp_path / "smoke.sh"
    script.write_text(smoke.script("v0.3.2-sctp.2-debian", "1.31"))
    environment = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([sh, str(script)], capture_output=True, text=True, env=environment, timeout=60, check=False)


@pytest.fixture(autouse=True)
def net_admin() -> None:
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    if not effective >> 12 & 1:
        pytest.skip("the check wants CAP_NET_ADMIN, as in its privileged container (run as root)")


def test_a_good_table_passes_and_versions_are_first_lines(tmp_path: Path) -> None:
    result = run_check(tmp_path, GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kube-router: Running kube-router version v0.3.2-sctp.2-debian, built on now, go1.19\n" in result.stdout
    assert "gobgp: gobgp version master\n" in result.stdout and "more" not in result.stdout
    assert result.stdout.rstrip().endswith("SMOKE-PASS")


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (GOOD.split("SCTP 10.254")[0], "SMOKE-FAIL 14 SCTP service not listed as SCTP"),
        (GOOD.replace("SCTP 10.254.125.172:32000", "TCP  10.254.125.172:32000"), "SMOKE-FAIL 14 SCTP service not"),
        (GOOD.replace("172.20.1.6:32000             Masq", "172.20.1.6:32000             Route"),
         "SMOKE-FAIL 14 SCTP real server not listed"),
        # the SCTP real server listed, but under the UDP service: not the SCTP service's
        (GOOD.replace("  -> 172.20.1.6:32000             Masq    1      0          0\n", "")
         .replace("UDP  10.254.125.172:32002 rr\n", "UDP  10.254.125.172:32002 rr\n  -> 172.20.1.6:32000 Masq 1 0 0\n"),
         "SMOKE-FAIL 14 SCTP real server not listed"),
        (GOOD.replace("TCP  10.254.125.172:32001 rr", "TCP  10.254.125.172:32001 wrr"), "SMOKE-FAIL 14 TCP service"),
        # a service is a line's start; an indented one is not a service
        (GOOD.replace("SCTP 10.254.125.172:32000 rr", "  SCTP 10.254.125.172:32000 rr"), "SMOKE-FAIL 14 SCTP service"),
        # a real server belongs to the service line right above its indented block
        (GOOD.replace("  -> 172.20.1.6:32000", "IPv6 other\n  -> 172.20.1.6:32000"),
         "SMOKE-FAIL 14 SCTP real server not listed"),
    ],
    ids=[
        "no-sctp-service",
        "sctp-listed-as-tcp",
        "not-masq",
        "real-server-under-another-service",
        "not-rr",
        "service-line-indented",
        "real-server-after-another-line",
    ],
)  # fmt: skip
def test_a_table_that_lacks_a_part_names_it(tmp_path: Path, table: str, says: str) -> None:
    result = run_check(tmp_path, table)
    assert result.returncode == 14, result.stdout + result.stderr
    assert says in result.stdout, result.stdout
