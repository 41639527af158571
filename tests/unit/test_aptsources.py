"""The host's apt sources as the kernel resolver reads them: the mirror, the suites a
plain `--kernel debian` chooses from, and the security archive beside the mirror."""

from __future__ import annotations

from pathlib import Path

from kube_router_sctp import aptsources


def write(apt: Path, name: str, text: str) -> Path:
    (apt / "sources.list.d").mkdir(parents=True, exist_ok=True)
    path = apt / "sources.list.d" / name
    path.write_text(text)
    return apt


def test_deb822_suites_and_the_security_source(tmp_path: Path) -> None:
    apt = write(
        tmp_path,
        "debian.sources",
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb-src\nURIs: http://elsewhere.example/debian\nSuites: sid\n",
    )
    assert aptsources.debian_mirror(apt) == "http://mirror.example/debian"
    assert aptsources.debian_suites("http://mirror.example/debian", apt) == (
        "bookworm",
        "bookworm-updates",
        "bookworm-security",
    )
    assert aptsources.security_mirror("http://mirror.example/debian", apt) == "http://mirror.example/debian-security"


def test_a_host_on_sid_and_the_one_line_format(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# sid box\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ sid main\n"
    )
    assert aptsources.debian_mirror(tmp_path) == "http://m.example/debian"
    assert aptsources.debian_suites("http://m.example/debian", tmp_path) == ("sid",)
    # No security source of its own: the mirror's sibling, Debian's layout.
    assert aptsources.security_mirror("http://m.example/debian", tmp_path) == "http://m.example/debian-security"


def test_no_sources_is_no_mirror(tmp_path: Path) -> None:
    assert aptsources.debian_mirror(tmp_path) is None
    assert aptsources.debian_suites(None, tmp_path) == ()
