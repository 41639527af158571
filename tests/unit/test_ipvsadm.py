"""ipvsadm/ is the one place of ipvsadm's pins and build knowledge, read by the code from there."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from kube_router_sctp import config, ipvsadm, plan
from kube_router_sctp.cli import main

PROJECT = Path(__file__).resolve().parents[2]
HASHES = {m[2]: m[1] for m in re.finditer(r"^sha256  ([0-9a-f]{64})  (\S+)$", (PROJECT / "ipvsadm" / "ipvsadm.hash").read_text(), re.M)}  # fmt: skip  # noqa: E501
ENV = {"GOPROXY": "off"}


def render(tmp_path: Path, *args: str, config_text: str = "", project: Path | None = None) -> tuple[int, str, str]:
    path = tmp_path / "config.toml"
    path.write_text(config_text)
    env = {**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(path)}
    if project is not None:
        env["KUBE_ROUTER_SCTP_PROJECT_DIR"] = str(project)
    result = CliRunner().invoke(main, ["render", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    for part in ("patches", "images", "ipvsadm"):
        shutil.copytree(PROJECT / part, project / part)
    return project


def test_the_pins_are_the_hash_file() -> None:
    releases = config.load(env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": "/nonexistent"}).pins.ipvsadm.releases
    pinned = {f.name: f.sha256 for release in releases.values() for f in release.files}
    assert pinned == HASHES
    assert set(releases) == {"1.29", "1.30", "1.31"}
    assert [f.name for f in releases["1.31"].files if f.debian_orig] == ["ipvsadm-1.31.tar.gz"]
    assert "# From https://" in (PROJECT / "ipvsadm" / "ipvsadm.hash").read_text()


def test_ipvsadm_knowledge_lives_only_in_its_folder() -> None:
    """No pin, file name, package or build step of ipvsadm outside ipvsadm/ (code, template, pins)."""
    needles = [*HASHES.values(), *HASHES, "libnl", "popt", "make libs", "kernel.org/pub/linux/utils/kernel/ipvsadm"]
    places = [*(PROJECT / "src").rglob("*.py"), *(PROJECT / "src").rglob("*.toml"), *(PROJECT / "images").rglob("*")]
    for path in places:
        if path.is_file():
            text = path.read_text()
            found = [needle for needle in needles if needle in text]
            assert not found, f"{path.relative_to(PROJECT)} holds ipvsadm knowledge: {found}"
    readme = (PROJECT / "ipvsadm" / "README.md").read_text()
    for note in ("libnl-3", "libnl-genl-3", "popt", "make libs", "--sctp-service", "linux-libc-dev"):
        assert note in readme, note


def test_the_builder_stage_comes_from_the_folder(tmp_path: Path) -> None:
    code, out, _ = render(tmp_path, "--base-family", "debian", "--ipvsadm-version", "1.31")
    assert code == 0
    # Its packages install in a stage of their own (built with the network), the build after.
    deps = out.split("AS ipvsadm-deps", 1)[1].split("\nFROM ", 1)[0]
    assert "libnl-genl-3-dev" in deps and "libpopt-dev" in deps and "linux-libc-dev" in deps
    stage = out.split("AS ipvsadm-builder", 1)[1].split("\nFROM ", 1)[0]
    assert "RUN make libs \\\n && make \\\n" in stage and "apt-get" not in stage
    runtime = out.split("AS runtime-deps", 1)[1].split("\nFROM ", 1)[0]
    assert "libnl-genl-3-200" in runtime and "libpopt0" in runtime and "libnl-3-dev" not in runtime


def test_a_user_config_adds_an_ipvsadm_release(tmp_path: Path) -> None:
    sha = "c" * 64
    text = f'[ipvsadm.releases."1.32"]\nfiles = [{{ name = "ipvsadm-1.32.tar.xz", sha256 = "{sha}" }}]\n'
    code, out, err = render(tmp_path, "--ipvsadm-version", "1.32", config_text=text)
    assert code == 0, err
    assert "COPY ipvsadm/ipvsadm-1.32.tar.xz /src/ipvsadm-1.32.tar.xz" in out
    assert f'RUN echo "{sha}  ipvsadm-1.32.tar.xz"' in out and "WORKDIR /src/ipvsadm-1.32" in out
    settings = config.load(
        {"build.ipvsadm-version": "1.32"}, env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(tmp_path / "config.toml")}
    )
    built = plan.build(settings)
    assert built.ipvsadm.urls[-1] == "https://www.kernel.org/pub/linux/utils/kernel/ipvsadm/ipvsadm-1.32.tar.xz"
    assert "1.31" in settings.pins.ipvsadm.releases  # added beside the project's, not instead


def test_a_file_that_is_not_the_release_it_pins(tmp_path: Path) -> None:
    text = f'[ipvsadm.releases."1.32"]\nfiles = [{{ name = "ipvsadm-1.31.tar.xz", sha256 = "{"c" * 64}" }}]\n'
    code, out, err = render(tmp_path, "--ipvsadm-version", "1.32", config_text=text)
    assert code == 2 and out == ""
    assert 'ipvsadm.releases."1.32".files[0].name' in err and "name it ipvsadm-1.32.tar.gz" in err


def test_the_debian_pool_serves_the_debian_orig_file() -> None:
    settings = config.load(
        {"build.ipvsadm-version": "1.31", "mirrors.debian": "http://deb.example.org/debian"},
        env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": "/nonexistent"},
    )
    built = plan.build(settings)
    assert built.ipvsadm.name == "ipvsadm-1.31.tar.gz"
    assert "http://deb.example.org/debian/pool/main/i/ipvsadm/ipvsadm_1.31.orig.tar.gz" in built.ipvsadm.urls


def test_a_broken_hash_line_names_its_file_and_line(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    hashes = project / "ipvsadm" / "ipvsadm.hash"
    hashes.write_text(hashes.read_text() + "sha256  abc  ipvsadm-1.33.tar.xz; id\n")
    code, out, err = render(tmp_path, project=project)
    assert code == 2 and out == ""
    assert f"{hashes}:{len(hashes.read_text().splitlines())}" in err


def test_a_bad_hash_in_the_hash_file_is_refused_like_any_pin(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    hashes = project / "ipvsadm" / "ipvsadm.hash"
    hashes.write_text(hashes.read_text() + "sha256  " + "Z" * 64 + "  ipvsadm-1.33.tar.xz\n")
    code, out, err = render(tmp_path, project=project)
    assert code == 2 and out == ""
    assert 'ipvsadm.releases."1.33".files[0].sha256' in err and "set by ipvsadm/ipvsadm.hash" in err


PATCH = """Description: an example change
Origin: vendor
Forwarded: not-needed
Last-Update: 2026-12-01
---
--- a/VERSION
+++ b/VERSION
@@ -1 +1 @@
-1.31
+1.31-sctp
"""


def test_patches_in_the_folder_are_applied_in_the_builder(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (project / "ipvsadm" / "0001-example-change.patch").write_text(PATCH)
    code, out, err = render(tmp_path, "--base-family", "debian", project=project)
    assert code == 0, err
    assert "COPY ipvsadm/patches/0001-example-change.patch /src/patches/0001-example-change.patch" in out
    assert "RUN patch -p1 --forward --batch < /src/patches/0001-example-change.patch" in out
    installs = out.split("AS ipvsadm-deps", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"apt-get install [^\n]* xz-utils patch\b", installs), installs
    known = ipvsadm.knowledge(project / "ipvsadm")
    assert [p.name for p in known.patches] == ["0001-example-change.patch"]


def test_a_patch_without_dep3_headers_is_refused(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (project / "ipvsadm" / "0001-example-change.patch").write_text(PATCH.split("---\n", 1)[1])
    code, out, err = render(tmp_path, project=project)
    assert code == 2 and out == ""
    assert "0001-example-change.patch lacks DEP-3 field(s) Description, Origin, Last-Update" in err
