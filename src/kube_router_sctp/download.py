"""The one place that downloads: verified, retried, cached, resumable by re-running.

A download streams into ``tmp/`` of the cache while its sha256 is computed, and is moved
into the cache only when the digest matches the pin. Transient failures (connection
errors, time-outs, 5xx, truncated bodies) are retried with exponential backoff; a 4xx
or a checksum mismatch moves on to the next mirror. Nothing partial is ever left where
a later run would read it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from . import log, safefs
from .cache import Cache
from .errors import ConfigError, FetchError, VerificationError

USER_AGENT = "kube-router-sctp (+build pipeline)"
MAX_BYTES = 4 << 30  # the largest file fetched (a kernel package, a Go toolchain) is ~150 MiB


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    url: str | None  # None when served from the cache
    size: int


class _Transient(Exception):
    """A failure worth retrying against the same URL."""


class _Permanent(Exception):
    """A failure that retrying the same URL will not fix."""


class _Mismatch(Exception):
    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


# Checks a downloaded file the caller can verify but not pin by sha256 (a Go module
# against go.sum's h1): None when it is good, else what is wrong with it.
Verifier = Callable[[Path], str | None]


class Downloader:
    def __init__(
        self,
        cache: Cache,
        *,
        offline: bool = False,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        attempts: int = 4,
        backoff: float = 1.0,
        session: requests.Session | None = None,
    ) -> None:
        self.cache = cache
        self.offline = offline
        self.timeout = (connect_timeout, read_timeout)
        self.attempts = attempts
        self.backoff = backoff
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.bytes_downloaded = 0
        self._count_lock = threading.Lock()  # module files are fetched by several threads

    def fetch(self, name: str, sha256: str, urls: Sequence[str], hint: str = "") -> Downloaded:
        """Return the cached file with this sha256, downloading it from ``urls`` if needed."""
        with self.cache.lock(sha256):
            self._drop_stale_parts(sha256)
            if self.cache.has_blob(sha256):
                path = self.cache.blob_path(sha256)
                log.info(f"{name}: cached ({sha256[:12]})")
                return Downloaded(path, sha256, None, path.stat().st_size)
            if self.offline:
                raise FetchError(
                    f"{name} (sha256 {sha256}) is not in the cache and --offline forbids downloading",
                    "run once without --offline, or put the file into the cache with "
                    "`python build.py fetch --import FILE`",
                )
            if not urls:
                raise FetchError(f"no source URL is configured for {name}", hint or "configure a mirror")
            return self._download(name, sha256, urls, hint)

    def fetch_unpinned(self, name: str, urls: Sequence[str], dest: Path, hint: str = "") -> Downloaded:
        """Download to ``dest`` (not into the cache) for a caller that verifies the content
        itself, as kube-router archives are verified by the digest of the tree they hold."""
        if self.offline:
            raise FetchError(f"{name} is not in the cache and --offline forbids downloading", hint)
        url, size, _, _ = self._first_good(name, urls, None, lambda _attempt: dest, hint)
        return Downloaded(dest, "", url, size)

    def fetch_verified(
        self,
        name: str,
        urls: Sequence[str],
        verify: Verifier,
        *,
        what: str,
        hint: str = "",
        max_bytes: int | None = None,
    ) -> Downloaded:
        """Download a file no sha256 pins, accept it only if ``verify`` does, and cache it
        under the sha256 of its bytes. The caller keeps its own index (name -> sha256) and
        holds the lock for it; ``what`` names the reference in a mismatch (``go.sum's h1:…``).
        Nothing is logged per file: the caller reports many files at once."""
        if self.offline:
            raise FetchError(f"{name} is not in the cache and --offline forbids downloading", hint)
        token = f"{threading.get_ident()}-{time.monotonic_ns()}"

        def part(attempt: int) -> Path:
            return self.cache.tmp_dir() / f"verified-{token}.{attempt}.part"

        url, size, done, actual = self._first_good(
            name, urls, None, part, hint, verify=verify, what=what, max_bytes=max_bytes, progress=False
        )
        with self.cache.lock(actual):
            if self.cache.has_blob(actual):
                done.unlink(missing_ok=True)
                path = self.cache.blob_path(actual)
            else:
                path = self.cache.put_blob(done, actual)
        return Downloaded(path, actual, url, size)

    # -----------------------------------------------------------------------------
    def _download(self, name: str, sha256: str, urls: Sequence[str], hint: str) -> Downloaded:
        def part(attempt: int) -> Path:
            return self.cache.tmp_dir() / f"{sha256}.{attempt}.part"

        url, size, done, _ = self._first_good(name, urls, sha256, part, hint)
        path = self.cache.put_blob(done, sha256)
        log.info(f"{name}: downloaded {size} bytes from {url}, sha256 verified")
        return Downloaded(path, sha256, url, size)

    def _first_good(
        self,
        name: str,
        urls: Sequence[str],
        sha256: str | None,
        part_for: Callable[[int], Path],
        hint: str,
        *,
        verify: Verifier | None = None,
        what: str = "",
        max_bytes: int | None = None,
        progress: bool = True,
    ) -> tuple[str, int, Path, str]:
        """Try each URL, retrying transient failures with backoff; return (url, size, file,
        sha256) of the first complete download that matches ``sha256`` or passes ``verify``.
        Every failed attempt's file is removed at once."""
        failures: list[str] = []
        mismatch: tuple[str, str] | None = None
        for url in urls:
            for attempt in range(1, self.attempts + 1):
                part = part_for(attempt)
                try:
                    size, actual = self._stream(url, part, name, sha256, max_bytes, progress)
                    _check(part, verify)
                except _Transient as exc:
                    part.unlink(missing_ok=True)
                    if attempt < self.attempts:
                        delay = self.backoff * 2 ** (attempt - 1)
                        log.info(f"{name}: {exc} from {url}; retry {attempt}/{self.attempts - 1} in {delay:.0f}s")
                        time.sleep(delay)
                        continue
                    failures.append(f"{url}: {exc}")
                    break
                except _Permanent as exc:
                    part.unlink(missing_ok=True)
                    failures.append(f"{url}: {exc}")
                    break
                except _Mismatch as exc:
                    part.unlink(missing_ok=True)
                    mismatch = (url, exc.actual)
                    kind = "checksum mismatch" if verify is None else "mismatch"
                    log.warn(f"{name}: {kind} from {url} ({exc.actual}); discarded")
                    break
                except OSError as exc:
                    part.unlink(missing_ok=True)
                    if exc.filename or isinstance(exc, requests.RequestException):
                        raise
                    raise OSError(exc.errno, exc.strerror, str(part.parent)) from exc  # name the full place
                except BaseException:
                    part.unlink(missing_ok=True)
                    raise
                return url, size, part, actual
        if mismatch is not None and verify is not None:
            url, problem = mismatch
            raise VerificationError(
                f"{name} from {url} does not match {what}: {problem}; nothing was cached",
                "the proxy serves a different file than the source's go.sum pins: fix or change the proxy",
            )
        if mismatch is not None:
            url, actual = mismatch
            raise VerificationError(
                f"checksum mismatch for {name} from {url}: expected sha256 {sha256}, got {actual}; nothing was cached",
                "the mirror serves a different file: fix the mirror or, if the new file is "
                "genuine, update the pin on purpose",
            )
        raise FetchError(
            f"could not download {name}: " + "; ".join(failures),
            hint or "configure a reachable mirror, or use --offline with a filled cache",
        )

    def _stream(
        self, url: str, part: Path, name: str, sha256: str | None, max_bytes: int | None = None, progress: bool = True
    ) -> tuple[int, str]:
        """Stream ``url`` into ``part``; return (size, sha256)."""
        digest = hashlib.sha256()
        scheme = urlsplit(url).scheme
        if scheme == "file":
            source = Path(unquote(urlsplit(url).path))
            if not source.is_file():
                raise _Permanent("no such file")
            if max_bytes is not None and source.stat().st_size > max_bytes:
                raise _Permanent(f"more than the {max_bytes >> 20} MiB allowed")
            with source.open("rb") as src, part.open("wb") as dst:
                received = 0
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    received = _bounded(received + len(chunk))
                    digest.update(chunk)
                    dst.write(chunk)
            return self._finish(part, digest.hexdigest(), sha256), digest.hexdigest()
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout)
        except requests.TooManyRedirects as exc:
            raise _Permanent("redirect loop") from exc
        except requests.exceptions.InvalidURL as exc:
            raise _Permanent(f"invalid URL ({exc})") from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            if _describe(exc) == "host name not resolvable":
                raise _Permanent("host name not resolvable") from exc
            raise _Transient(_describe(exc)) from exc
        with response:
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(f"HTTP {response.status_code}")
            if response.status_code != 200:
                raise _Permanent(f"HTTP {response.status_code}")
            expected = response.headers.get("Content-Length")
            total = int(expected) if expected and expected.isdigit() else None
            if max_bytes is not None and total is not None and total > max_bytes:
                raise _Permanent(f"{total} bytes, more than the {max_bytes >> 20} MiB allowed")
            bar = log.Progress(name, total) if progress else None
            received = 0
            try:
                with part.open("wb") as dst:
                    for chunk in response.iter_content(chunk_size=1 << 16):
                        received = _bounded(received + len(chunk))
                        digest.update(chunk)
                        dst.write(chunk)
                        with self._count_lock:
                            self.bytes_downloaded += len(chunk)
                        if bar is not None:
                            bar.advance(len(chunk))
                        if max_bytes is not None and received > max_bytes:
                            raise _Permanent(f"more than the {max_bytes >> 20} MiB allowed")
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Transient(_describe(exc)) from exc
            except requests.exceptions.ChunkedEncodingError as exc:
                raise _Transient("connection broken mid-body") from exc
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and received != total:
                raise _Transient(f"truncated body ({received} of {total} bytes)")
        return self._finish(part, digest.hexdigest(), sha256), digest.hexdigest()

    @staticmethod
    def _finish(part: Path, actual: str, sha256: str | None) -> int:
        if sha256 is not None and actual != sha256:
            raise _Mismatch(actual)
        return part.stat().st_size

    def _drop_stale_parts(self, sha256: str) -> None:
        """Remove partial files of this entry left by a killed run (we hold its lock)."""
        for stale in self.cache.tmp_dir().glob(f"{sha256}.*.part"):
            stale.unlink(missing_ok=True)

    def import_file(self, source: Path, known: dict[str, str]) -> tuple[str, str] | None:
        """Copy a file into the cache if its sha256 is one of ``known`` (sha256 -> name).
        Only a regular file, at most MAX_BYTES: a FIFO would wait and /dev/zero never end."""
        opened = safefs.open_regular(source)
        if opened is None:
            raise ConfigError(f"{source} is not a regular file", "import the downloaded file itself")
        part = self.cache.tmp_dir() / f"import-{os.getpid()}-{time.monotonic_ns()}.part"
        digest = hashlib.sha256()
        try:
            with opened as handle, part.open("wb") as copy:
                received = 0
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    received += len(chunk)
                    if received > MAX_BYTES:
                        raise ConfigError(
                            f"{source} is larger than {MAX_BYTES >> 20} MiB, more than any pinned file",
                            "import the downloaded file itself",
                        )
                    digest.update(chunk)
                    copy.write(chunk)
            actual = digest.hexdigest()
            if actual not in known:
                return None
            with self.cache.lock(actual):
                if not self.cache.has_blob(actual):
                    self.cache.put_blob(part, actual)
            return actual, known[actual]
        finally:
            part.unlink(missing_ok=True)


def _bounded(received: int) -> int:
    """``received`` bytes so far, unless that is more than any download may be: a body
    that never ends (a hostile mirror, a file:// path into /proc) must not fill the disk
    before its checksum can refuse it."""
    if received > MAX_BYTES:
        raise _Permanent(f"larger than {MAX_BYTES >> 20} MiB, more than any file this tool downloads")
    return received


def _check(part: Path, verify: Verifier | None) -> None:
    problem = verify(part) if verify is not None else None
    if problem is not None:
        raise _Mismatch(problem)


def _describe(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        return "timed out"
    if "Name or service not known" in text or "NameResolutionError" in text:
        return "host name not resolvable"
    if "Connection refused" in text:
        return "connection refused"
    return "connection failed"
