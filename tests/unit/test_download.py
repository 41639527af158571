"""Downloads against a real local HTTP server: verified, cached, never partial."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
from kube_router_sctp.errors import FetchError, VerificationError
from tests.support.faultserver import Behaviour, FaultServer

BODY = b"ipvsadm tarball bytes " * 4096
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> FaultServer:
    with FaultServer() as srv:
        yield srv


def downloader(tmp_path: Path, **kwargs: object) -> Downloader:
    return Downloader(Cache(tmp_path / "cache"), backoff=0.01, read_timeout=1.0, **kwargs)  # type: ignore[arg-type]


def cache_is_clean(tmp_path: Path) -> bool:
    blobs = list((tmp_path / "cache" / "blobs" / "sha256").glob("*"))
    parts = list((tmp_path / "cache" / "tmp").glob("*"))
    return all(b.name == SHA for b in blobs) and not parts


def test_download_is_verified_and_cached(tmp_path: Path, server: FaultServer) -> None:
    server.routes["/ipvsadm.tar.gz"] = Behaviour(BODY)
    dl = downloader(tmp_path)
    got = dl.fetch("ipvsadm", SHA, [server.url("/ipvsadm.tar.gz")])
    assert got.path.read_bytes() == BODY
    assert dl.bytes_downloaded == len(BODY)
    again = downloader(tmp_path)
    assert again.fetch("ipvsadm", SHA, [server.url("/ipvsadm.tar.gz")]).url is None
    assert again.bytes_downloaded == 0
    assert server.hits["/ipvsadm.tar.gz"] == 1


def test_checksum_mismatch_caches_nothing(tmp_path: Path, server: FaultServer) -> None:
    server.routes["/ipvsadm.tar.gz"] = Behaviour(BODY + b"tampered")
    with pytest.raises(VerificationError, match="checksum mismatch for ipvsadm .* nothing was cached"):
        downloader(tmp_path).fetch("ipvsadm", SHA, [server.url("/ipvsadm.tar.gz")])
    assert not (tmp_path / "cache" / "blobs" / "sha256" / SHA).exists()
    assert cache_is_clean(tmp_path)


def test_next_mirror_after_mismatch(tmp_path: Path, server: FaultServer) -> None:
    server.routes["/bad"] = Behaviour(b"wrong")
    server.routes["/good"] = Behaviour(BODY)
    got = downloader(tmp_path).fetch("ipvsadm", SHA, [server.url("/bad"), server.url("/good")])
    assert got.url == server.url("/good")


def test_offline_without_cache_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="--offline forbids downloading"):
        downloader(tmp_path, offline=True).fetch("ipvsadm", SHA, ["http://127.0.0.1:9/x"])


def test_unreachable_names_the_url(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"could not download ipvsadm: http://127\.0\.0\.1:9/x: connection refused"):
        downloader(tmp_path).fetch("ipvsadm", SHA, ["http://127.0.0.1:9/x"])


def test_tampered_cache_entry_is_fetched_again(tmp_path: Path, server: FaultServer) -> None:
    server.routes["/f"] = Behaviour(BODY)
    first = downloader(tmp_path).fetch("ipvsadm", SHA, [server.url("/f")])
    first.path.chmod(0o644)
    first.path.write_bytes(b"tampered")
    second = downloader(tmp_path).fetch("ipvsadm", SHA, [server.url("/f")])
    assert second.path.read_bytes() == BODY
    assert server.hits["/f"] == 2


@pytest.mark.parametrize("where", ["http", "file"])
def test_a_body_larger_than_any_download_is_cut_off(
    tmp_path: Path, server: FaultServer, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # A mirror (or a file:// path such as /proc/kcore) that never ends would fill the
    # cache's disk before the checksum could refuse it: downloads stop at MAX_BYTES.
    from kube_router_sctp import download

    monkeypatch.setattr(download, "MAX_BYTES", len(BODY) // 2)
    server.routes["/endless"] = Behaviour(BODY)
    local = tmp_path / "big"
    local.write_bytes(BODY)
    url = server.url("/endless") if where == "http" else f"file://{local}"
    with pytest.raises(FetchError, match="larger than"):
        downloader(tmp_path).fetch("ipvsadm", SHA, [url])
    assert cache_is_clean(tmp_path)
    with pytest.raises(FetchError, match="larger than"):
        downloader(tmp_path).fetch_unpinned("kube-router archive", [url], tmp_path / "source.tar")


def test_importing_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `fetch --import` of a FIFO waited forever; of /dev/zero it hashed forever.
    import os

    from kube_router_sctp import download
    from kube_router_sctp.errors import ConfigError

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ConfigError, match="is not a regular file"):
            downloader(tmp_path).import_file(path, {SHA: "ipvsadm"})
    monkeypatch.setattr(download, "MAX_BYTES", 10)
    big = tmp_path / "big"
    big.write_bytes(BODY)
    with pytest.raises(ConfigError, match="larger than"):
        downloader(tmp_path).import_file(big, {SHA: "ipvsadm"})
    assert cache_is_clean(tmp_path)
    monkeypatch.setattr(download, "MAX_BYTES", 4 << 30)
    assert downloader(tmp_path).import_file(big, {SHA: "ipvsadm"}) == (SHA, "ipvsadm")
    assert (tmp_path / "cache" / "blobs" / "sha256" / SHA).read_bytes() == BODY
