"""The host's apt sources, read (never written): which Debian mirror and which suites.

The Debian mirror of every network input (base images, kernels, the Docker-host disk)
comes from here unless configured, so no host name is ever written into the project.
Both formats are read: deb822 ``*.sources`` stanzas and one-line ``deb URI SUITE ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class Source:
    uri: str  # without a trailing slash
    suites: tuple[str, ...]

    @property
    def security(self) -> bool:
        return any(suite.endswith("-security") for suite in self.suites) or "security" in self.uri


def _files(apt_dir: Path) -> list[Path]:
    files = [apt_dir / "sources.list.d" / "debian.sources", apt_dir / "sources.list"]
    files += sorted((apt_dir / "sources.list.d").glob("*.sources"))
    files += sorted((apt_dir / "sources.list.d").glob("*.list"))
    return list(dict.fromkeys(files))


def _deb822(text: str) -> list[Source]:
    sources: list[Source] = []
    for stanza in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            words = line.split("#", 1)[0].split()
            if words and words[0].endswith(":"):
                fields[words[0][:-1].lower()] = words[1:]
        if "deb" not in fields.get("types", ["deb"]) or fields.get("enabled", ["yes"])[0].lower() == "no":
            continue
        suites = tuple(fields.get("suites", []))
        sources += [Source(uri.rstrip("/"), suites) for uri in fields.get("uris", [])]
    return sources


def _one_line(text: str) -> list[Source]:
    sources: list[Source] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = [w for w in words[1:] if not w.startswith("[")]  # drop "[arch=amd64 signed-by=...]"
        uri = next((w for w in words if "://" in w), None)
        if uri is not None and words.index(uri) + 1 < len(words):
            sources.append(Source(uri.rstrip("/"), (words[words.index(uri) + 1],)))
    return sources


def sources(apt_dir: Path = APT_DIR) -> list[Source]:
    """Every enabled ``deb`` source with an http(s) (or local file:) URI, in apt's order."""
    found: list[Source] = []
    for path in _files(apt_dir):
        try:
            text = path.read_text()
        except OSError:
            continue
        parsed = _deb822(text) if path.suffix == ".sources" else _one_line(text)
        found += [s for s in parsed if s.uri.startswith(("http://", "https://", "file:/")) and s not in found]
    return found


def debian_mirror(apt_dir: Path = APT_DIR) -> str | None:
    """The first archive (not security) URI: Debian's mirror as this host uses it."""
    return next((s.uri for s in sources(apt_dir) if not s.security), None)


def debian_suites(mirror: str | None, apt_dir: Path = APT_DIR) -> tuple[str, ...]:
    """The suites the host takes from ``mirror`` and from the security archive beside it:
    what apt would choose a kernel from (``bookworm bookworm-updates bookworm-security``)."""
    suites: list[str] = []
    for source in sources(apt_dir):
        if source.uri == mirror or (source.security and source.uri == security_mirror(mirror, apt_dir)):
            suites += [s for s in source.suites if s not in suites]
    return tuple(suites)


def security_mirror(mirror: str | None, apt_dir: Path = APT_DIR) -> str | None:
    """The security archive: the host's own security source, else the mirror's sibling
    (``.../debian`` -> ``.../debian-security``, the layout Debian's mirrors use)."""
    for source in sources(apt_dir):
        if source.security and any(s.endswith("-security") for s in source.suites):
            return source.uri
    return f"{mirror}-security" if mirror else None
