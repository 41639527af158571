"""A second, throw-away Docker daemon on this host (its own data root, exec root, pid
file, socket and bridge; no iptables), for tests that copy images between daemons.

Not ``--bridge=none``: a daemon started so deletes the host's ``docker0`` (the interface
is the kernel's, shared by every daemon), which cuts the first daemon's containers off.
This one gets a bridge of its own, made here and deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import env


@contextlib.contextmanager
def second_daemon(timeout: float = 60) -> Iterator[str]:
    """Start ``dockerd`` beside the host's; yield its ``unix://`` address; stop it and
    remove everything it wrote."""
    binary = env.require_binary("dockerd", "docker.io")
    if os.geteuid() != 0:
        env.missing("needs root to start a second Docker daemon")
    root = Path(tempfile.mkdtemp(prefix="krs-dockerd-", dir="/tmp"))  # short: socket paths are limited
    socket = root / "d.sock"
    bridge = f"krs{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "198.18.250.1/24", "dev", bridge], check=True)  # a benchmark range
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [binary, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "d.pid"), "-H", f"unix://{socket}", f"--bridge={bridge}", "--iptables=false",
         "--ip6tables=false", "--ip-forward=false", "--ip-masq=false", "--containerd-namespace", "krs-test",
         "--containerd-plugins-namespace", "krs-test-p"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        from kube_router_sctp.engine import daemon_answers

        while not daemon_answers(f"unix://{socket}"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second dockerd did not start:\n{(root / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"unix://{socket}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(root)):
                subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", bridge], check=False)
