"""Go modules from a misbehaving proxy: a real local HTTP server the test controls plays the
Go module proxy. A module whose bytes do not match go.sum is refused in one line and leaves
nothing in the cache; a refusal names the module; offline, nothing is asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube_router_sctp import gomodules
from kube_router_sctp.cache import Cache
from kube_router_sctp.download import Downloader
from kube_router_sctp.errors import FetchError, VerificationError
from tests.support.faultserver import Behaviour, FaultServer
from tests.unit.test_gomodules import ORACLE_FILES, ORACLE_MOD_H1, ORACLE_ZIP_H1, oracle_zip

ZIP = "/example.com/oracle/@v/v1.0.0.zip"
MOD = "/example.com/oracle/@v/v1.0.0.mod"
SUMS = gomodules.parse_go_sum(
    f"example.com/oracle v1.0.0 {ORACLE_ZIP_H1}\nexample.com/oracle v1.0.0/go.mod {ORACLE_MOD_H1}\n", "go.sum"
)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[FaultServer]:
    with FaultServer() as server:
        server.routes[ZIP] = Behaviour(oracle_zip(tmp_path).read_bytes())
        server.routes[MOD] = Behaviour(ORACLE_FILES["go.mod"])
        yield server


def store(cache: Path, server: FaultServer, offline: bool = False) -> gomodules.ModuleStore:
    downloader = Downloader(Cache(cache), offline=offline, backoff=0.01, read_timeout=2.0)
    return gomodules.ModuleStore(Cache(cache), downloader, [server.base])


def leftovers(cache: Path) -> list[str]:
    """Everything the cache holds besides its (empty) directories and lock files."""
    return sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file() and p.parent.name != "locks")


def test_modules_are_verified_cached_and_fetched_once(tmp_path: Path, proxy: FaultServer) -> None:
    cache = tmp_path / "cache"
    files = store(cache, proxy).get_all(SUMS.values())
    assert sorted((f.kind, f.h1, f.downloaded) for f in files) == [
        ("mod", ORACLE_MOD_H1, True),
        ("zip", ORACLE_ZIP_H1, True),
    ]
    again = store(cache, proxy)
    assert not any(f.downloaded for f in again.get_all(SUMS.values()))
    assert again.downloader.bytes_downloaded == 0
    assert proxy.hits[ZIP] == 1 and proxy.hits[MOD] == 1
    assert len([p for p in leftovers(cache) if p.startswith("index/gomod/")]) == 2


def test_bytes_that_do_not_match_go_sum_are_refused_in_one_line_and_not_cached(
    tmp_path: Path, proxy: FaultServer
) -> None:
    proxy.routes[ZIP].corrupt = True
    cache = tmp_path / "cache"
    with pytest.raises(VerificationError) as caught:
        store(cache, proxy).get_all(SUMS.values())
    line = caught.value.one_line()
    assert "\n" not in line
    assert line.startswith(
        f"example.com/oracle@v1.0.0.zip from {proxy.base}{ZIP} does not match go.sum's {ORACLE_ZIP_H1}"
    )
    assert "nothing was cached" in line and caught.value.exit_code == 4
    # The go.mod was good and is kept (verified on its own); nothing of the zip is left.
    held = leftovers(cache)
    assert len(held) == 2 and all(p.startswith(("blobs/sha256/", "index/gomod/")) for p in held)
    mod_blob = next(p for p in held if p.startswith("blobs/"))
    assert (cache / mod_blob).read_bytes() == ORACLE_FILES["go.mod"]


def test_a_proxy_refusing_a_version_is_named(tmp_path: Path, proxy: FaultServer) -> None:
    proxy.routes[ZIP] = Behaviour(status=403)
    with pytest.raises(FetchError, match=r"example.com/oracle@v1.0.0.zip: .*HTTP 403"):
        store(tmp_path / "cache", proxy).get_all(SUMS.values())
    assert proxy.hits[ZIP] == 1  # a refusal is not retried


def test_offline_asks_the_proxy_nothing(tmp_path: Path, proxy: FaultServer) -> None:
    with pytest.raises(FetchError, match="not in the cache and --offline forbids downloading"):
        store(tmp_path / "cache", proxy, offline=True).get_all(SUMS.values())
    assert not proxy.hits


def test_two_go_sums_disagreeing_about_a_module_are_refused(tmp_path: Path, proxy: FaultServer) -> None:
    cache = tmp_path / "cache"
    store(cache, proxy).get_all(SUMS.values())
    liar = gomodules.Sum("example.com/oracle", "v1.0.0", ORACLE_MOD_H1, None)  # a zip h1 that is not the zip's
    with pytest.raises(VerificationError, match="go.sum says .*, but the cache holds it verified as"):
        store(cache, proxy).get_all([liar])
