"""Download faults against a real local HTTP server the test controls.

Each case asserts the exact outcome: the exception class (its exit code), the message,
how often the server was asked, and that the cache holds nothing but verified files.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
from kube_router_sctp.errors import FetchError, VerificationError
from tests.support.faultserver import Behaviour, FaultServer

BODY = os.urandom(300_000)
SHA = hashlib.sha256(BODY).hexdigest()
PATH = "/ipvsadm-1.31.tar.gz"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def downloader(cache: Path, **kwargs: object) -> Downloader:
    return Downloader(Cache(cache), backoff=0.05, read_timeout=1.0, **kwargs)  # type: ignore[arg-type]


def cache_holds_only_verified(cache: Path) -> list[str]:
    """Every blob matches its name; no partial files anywhere. Returns the blob names."""
    blobs = sorted((cache / "blobs" / "sha256").glob("*")) if (cache / "blobs").exists() else []
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"{blob} is not what its name says"
    assert not list((cache / "tmp").glob("*.part")) if (cache / "tmp").exists() else True
    return [b.name for b in blobs]


def fetch(cache: Path, server: FaultServer, **kwargs: object) -> Path:
    return downloader(cache, **kwargs).fetch("ipvsadm", SHA, [server.url(PATH)]).path


def test_truncated_body_is_retried_then_succeeds(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, truncate_at=1000)
    with pytest.raises(FetchError, match=r"truncated body \(1000 of 300000 bytes\)|connection broken"):
        fetch(tmp_path, server)
    assert server.hits[PATH] == 4  # every attempt
    assert cache_holds_only_verified(tmp_path) == []
    server.routes[PATH] = Behaviour(BODY)
    assert fetch(tmp_path, server).read_bytes() == BODY


def test_corrupted_bytes_are_not_retried_and_not_cached(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, corrupt=True)
    with pytest.raises(VerificationError, match="checksum mismatch for ipvsadm .* nothing was cached"):
        fetch(tmp_path, server)
    assert server.hits[PATH] == 1
    assert cache_holds_only_verified(tmp_path) == []


def test_stall_past_the_timeout_is_retried_then_fails(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, stall=3.0)
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(tmp_path, server, attempts=2)
    assert server.hits[PATH] == 2
    assert time.monotonic() - start < 10
    assert cache_holds_only_verified(tmp_path) == []


def test_5xx_then_success(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, fail_first=[503, 502])
    assert fetch(tmp_path, server).read_bytes() == BODY
    assert server.hits[PATH] == 3
    assert cache_holds_only_verified(tmp_path) == [SHA]


def test_404_is_not_retried(tmp_path: Path, server: FaultServer) -> None:
    with pytest.raises(FetchError, match=r"ipvsadm-1.31.tar.gz: HTTP 404"):
        fetch(tmp_path, server)
    assert server.hits[PATH] == 1
    assert cache_holds_only_verified(tmp_path) == []


def test_wrong_content_length_is_caught(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, declared_length=len(BODY) + 500)
    with pytest.raises(FetchError, match=r"truncated body \(300000 of 300500 bytes\)|connection broken"):
        fetch(tmp_path, server, attempts=2)
    assert cache_holds_only_verified(tmp_path) == []


def test_redirect_loop_is_not_followed_forever(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(redirect_to=PATH)
    with pytest.raises(FetchError, match="redirect loop"):
        fetch(tmp_path, server)
    assert server.hits[PATH] <= 31  # requests' redirect limit, once: no retries on top
    assert cache_holds_only_verified(tmp_path) == []


def test_next_mirror_after_a_dead_one(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY)
    got = downloader(tmp_path).fetch("ipvsadm", SHA, ["http://127.0.0.1:9" + PATH, server.url(PATH)])
    assert got.url == server.url(PATH)


CHILD = """
import sys
from pathlib import Path
from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
Downloader(Cache(Path(sys.argv[1]))).fetch("ipvsadm", sys.argv[2], [sys.argv[3]])
print("done")
"""


def _child(cache: Path, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cache), SHA, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_sigkill_mid_download_leaves_no_cache_entry(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, trickle=0.02)
    child = _child(tmp_path, server.url(PATH))
    deadline = time.monotonic() + 20
    while not list((tmp_path / "tmp").glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert list((tmp_path / "tmp").glob("*.part")), "the download should be under way"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert cache_holds_only_verified_or_parts(tmp_path) == []
    # The next run cleans the killed run's part file and completes.
    server.routes[PATH] = Behaviour(BODY)
    assert fetch(tmp_path, server).read_bytes() == BODY
    assert cache_holds_only_verified(tmp_path) == [SHA]


def cache_holds_only_verified_or_parts(cache: Path) -> list[str]:
    """After a SIGKILL a .part may remain in tmp/ (nothing reads it); no blob may exist."""
    return sorted(p.name for p in (cache / "blobs" / "sha256").glob("*")) if (cache / "blobs").exists() else []


def test_two_pipelines_sharing_one_cache_both_succeed(tmp_path: Path, server: FaultServer) -> None:
    server.routes[PATH] = Behaviour(BODY, trickle=0.002)
    children = [_child(tmp_path, server.url(PATH)) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert all(out.strip() == "done" for out, _ in outputs)
    assert server.hits[PATH] == 1  # the second waited on the lock and found the verified file
    assert cache_holds_only_verified(tmp_path) == [SHA]


def test_full_disk_leaves_nothing_behind(tmp_path: Path, server: FaultServer) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tiny tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        server.routes[PATH] = Behaviour(BODY)
        with pytest.raises(OSError, match="No space left on device"):
            fetch(small, server)
        assert cache_holds_only_verified(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
