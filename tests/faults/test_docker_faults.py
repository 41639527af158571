"""Docker faults: no daemon, the daemon gone mid-build, a failing build step, a full disk,
Ctrl-C. Each asserts the exit status, the one-line message, the report, and that no
container was left behind (counted on the real daemon)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import V032_DEBIAN
from tests.support import env
from tests.support.tcpproxy import CuttableProxy
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]
SOCKET = "/var/run/docker.sock"


def containers() -> set[str]:
    engine = env.docker_engine()
    return {c["Id"] for c in engine.api.containers(all=True)}


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def test_no_daemon(tmp_path: Path, v032_debian_args: list[str]) -> None:
    result = env.run_cli("build", *v032_debian_args, "--docker-host", f"unix://{tmp_path}/no.sock")
    assert result.returncode == 6
    line = error_line(result.stderr)
    assert "the Docker daemon at unix://" in line and "is not reachable" in line
    assert "start dockerd" in line


def test_daemon_gone_during_the_build(tmp_path: Path, debian_image: str, v032_debian_args: list[str]) -> None:
    if not Path(SOCKET).exists():
        env.missing("needs the local Docker socket")
    before = containers()
    proxy = CuttableProxy(SOCKET, listen_unix=tmp_path / "docker.sock")
    proxy.cut_after = 20 << 20  # gone while the 60 MiB context is on its way
    try:
        report = tmp_path / "r.json"
        result = env.run_cli("build", *v032_debian_args, "--docker-host", proxy.address, "--report", str(report))
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert result.returncode == 6, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "lost the Docker daemon during the build" in line or "image build failed" in line
    assert json.loads(report.read_text())["status"] == "failed"
    time.sleep(2)
    assert containers() <= before


def test_failing_build_step_is_named(tmp_path: Path, debian_image: str, v032_debian_args: list[str]) -> None:
    before = containers()
    result = env.run_cli("build", *v032_debian_args, "--debian-mirror", "http://127.0.0.1:9/debian")
    assert result.returncode == 6
    line = error_line(result.stderr)
    assert "image build failed at step" in line and "apt-get" in line
    assert "--debian-mirror" in line  # the hint read apt's own complaint
    assert containers() <= before  # forcerm: the failed step's container is gone


def test_full_disk_names_the_place_and_keeps_nothing_half_written(
    tmp_path: Path, debian_image: str, upstream: Upstream
) -> None:
    # A cache of its own: the default cache cannot serve the tree, the configured source must.
    v032_debian_args = ["--kube-router-source", upstream.repository(), *V032_DEBIAN]
    if os.geteuid() != 0:
        env.missing("needs root to mount a small tmpfs")
    cache = tmp_path / "cache"
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(cache)], check=False).returncode:
        env.missing("cannot mount a tmpfs here")
    try:
        fetched = env.run_cli("fetch", *v032_debian_args, "--cache-dir", str(cache))
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        # Shrink the file system to what the cache holds plus a little: a 60 MiB context cannot fit.
        used = int(subprocess.run(["du", "-sm", str(cache)], capture_output=True, text=True).stdout.split()[0])
        subprocess.run(["mount", "-o", f"remount,size={used + 8}m", str(cache)], check=True)
        report = tmp_path / "r.json"
        result = env.run_cli("build", *v032_debian_args, "--cache-dir", str(cache), "--report", str(report))
        assert result.returncode == 1
        line = error_line(result.stderr)
        assert "No space left on device" in line and str(cache) in line
        assert "free disk space" in line
        assert "<== build FAILED" in result.stderr  # the failing step is named
        assert not list((cache / "tmp").iterdir())  # the half-written context is gone
        assert json.loads(report.read_text())["status"] == "failed"
    finally:
        subprocess.run(["umount", str(cache)], check=False)


def test_ctrl_c_during_the_build(tmp_path: Path, debian_image: str, v032_debian_args: list[str]) -> None:
    if not Path(SOCKET).exists():
        env.missing("needs the local Docker socket")
    before = containers()
    proxy = CuttableProxy(SOCKET, listen_unix=tmp_path / "docker.sock")
    proxy.delay = 0.01  # a slow link, so the build is still running when Ctrl-C comes
    report = tmp_path / "r.json"
    child = subprocess.Popen(
        [sys.executable, str(env.PROJECT / "build.py"), "build", *v032_debian_args, "--docker-host", proxy.address,
         "--report", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=env.PROJECT,
        # A run started in the background by a shell without job control inherits SIGINT
        # ignored (and Python then installs no KeyboardInterrupt): give the child the
        # terminal's default, as an operator's Ctrl-C meets it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while proxy.bytes_up < (4 << 20) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert report.exists() is False  # nothing written while running
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        proxy.close()
    assert child.returncode == 130, stderr[-2000:]
    assert "interrupted" in error_line(stderr)
    data = json.loads(report.read_text())  # complete JSON, not half a file
    assert data["status"] == "interrupted"
    assert not list(tmp_path.glob(".r.json.*"))
    time.sleep(2)
    assert containers() <= before
