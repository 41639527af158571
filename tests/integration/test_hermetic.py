"""Hermetic builds on the real daemon: the Go and ipvsadm stages build with the build
container's network disabled (``network_mode=none``), one release of each layout; offline
builds of a module line use only a cache carried by ``cache export``/``cache import``.

How the network is off while apt still works: the stages that install packages come first
in the Dockerfile and are built on their own, with the network (apt needs the Debian
mirror); the whole Dockerfile is then built with ``network_mode=none``, so those layers
come from Docker's layer cache (same instructions on the same parents) and every later
step - the Go toolchain's builds, gobgp, kube-router, ipvsadm - runs in a container without
a network. A step that tried to fetch anything (a Go module the context lacks) would fail.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support import env
from tests.support.upstream import Upstream

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]
BUILD = ["--base-family", "debian", "--ipvsadm-version", "1.31", "-q"]


def build(upstream: Upstream, version: str, tmp: Path, *extra: str) -> tuple[dict[str, object], str]:
    report = tmp / f"{version}.json"
    args = ["build", "--kube-router-version", version, *BUILD, "--report", str(report), *extra]
    result = env.run_cli(*args, *upstream.args(version), timeout=5400)
    data = json.loads(report.read_text()) if report.is_file() else {}
    assert result.returncode == 0, result.stderr[-3000:]
    return data, result.stdout


def test_network_none_is_what_the_builds_rely_on(debian_image: str, tmp_path: Path) -> None:
    """A build step in ``network_mode=none`` has no route to anything: the mechanism the
    pipeline uses for the Go stages, shown on a step that tries to reach the Go proxy."""
    engine = env.docker_engine()
    base = engine.image(debian_image)
    assert base is not None
    dockerfile = f'FROM {debian_image}\nRUN ["/bin/sh", "-c", "ls /sys/class/net > /interfaces"]\n'
    context = tmp_path / "context.tar"
    with tarfile.open(context, "w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    image = engine.build(context, "kube-router-sctp/itest-network-none:probe", nocache=True, network_mode="none")
    try:
        out = tmp_path / "out"
        out.mkdir()
        engine.extract(image, "/interfaces", out)
        assert (out / "interfaces").read_text().split() == ["lo"]  # no eth0: no network at all
    finally:
        engine.remove_image("kube-router-sctp/itest-network-none:probe")


@pytest.mark.parametrize(
    ("version", "layout"),
    [("v0.3.2", "gopath"), ("v1.2.2", "vendor"), ("v1.2.3", "modules")],
    ids=["dep-gopath", "go-mod-vendor", "go-mod"],
)
def test_each_layout_builds_with_the_network_off(upstream: Upstream, version: str, layout: str, tmp_path: Path) -> None:
    report, stdout = build(upstream, version, tmp_path)
    stages = report["stages"]
    assert isinstance(stages, dict)
    assert stages["build"]["network"] == {
        "package_stages": ["ipvsadm-deps", "runtime-deps", "go-toolchain"],
        "other_stages": "none",
    }
    modules = stages.get("go_modules")
    if layout == "gopath":
        assert modules is None  # everything vendored, gobgp too
        return
    assert modules["files"] == len(modules["modules"]) > 0
    for item in modules["modules"]:
        assert item["h1"].startswith("h1:") and len(item["sha256"]) == 64, item
    assert modules["gobgp"].startswith("github.com/osrg/gobgp@")  # built from its own module
    zips = {m["module"] for m in modules["modules"] if m["file"] == "zip"}
    if layout == "vendor":
        assert "k8s.io/client-go" not in zips  # kube-router's own deps stay vendored
    else:
        assert {"k8s.io/client-go", "github.com/osrg/gobgp"} <= zips
    image = stdout.split()[1]
    labels = (env.docker_engine().image(image) or {})["Config"]["Labels"]
    assert labels["io.github.kube-router-sctp.kube-router.version"] == version


def test_offline_builds_a_module_line_from_a_carried_cache_alone(upstream: Upstream, tmp_path: Path) -> None:
    """The air-gap story end to end: `fetch` fills an empty cache, `cache export` writes it,
    `cache import` fills another empty cache from the archive alone, and `--offline` builds
    from that one, downloading nothing; with one module taken out of it, --offline names the
    module and fails."""
    if upstream.source is None:
        env.missing(upstream.reason())  # an empty cache has no tree: the source is needed
    here, there, archive = tmp_path / "here", tmp_path / "there", tmp_path / "carried.tar"
    fetched = env.run_cli("fetch", "--kube-router-version", "v1.2.3", *BUILD, "--cache-dir", str(here),
                          "--kube-router-source", str(upstream.source), timeout=3600)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert "go-modules v1.2.3" in fetched.stdout
    exported = env.run_cli("cache", "export", str(archive), "--cache-dir", str(here), "-q")
    assert exported.returncode == 0, exported.stderr[-2000:]
    imported = env.run_cli("cache", "import", str(archive), "--cache-dir", str(there), "-q")
    assert imported.returncode == 0, imported.stderr[-2000:]
    # Everything the export counted arrived (the summaries name the same numbers).
    counts = exported.stdout.strip().split(": ", 1)[1].split(", ")[:3]
    assert imported.stdout.strip().split(": imported ", 1)[1].split(", ") == counts, (exported.stdout, imported.stdout)
    assert int(counts[1].split()[0]) > 0  # Go module entries were carried

    where = ["--offline", "--cache-dir", str(there)]
    args = ["build", "--kube-router-version", "v1.2.3", *BUILD, *where]
    report_path = tmp_path / "offline.json"
    result = env.run_cli(*args, "--report", str(report_path))  # no --kube-router-source: the cache alone
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["stages"]["go_modules"]["bytes_downloaded"] == 0
    assert report["stages"]["fetch"]["bytes_downloaded"] == 0
    assert report["stages"]["build"]["network"]["other_stages"] == "none"

    index = there / "index" / "gomod"
    entry = next(p for p in sorted(index.iterdir()) if '"file": "zip"' in p.read_text())
    module = json.loads(entry.read_text())
    entry.unlink()
    result = env.run_cli(*args)
    assert result.returncode == 3, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
    assert len(error) == 1
    assert f"Go module {module['module']}@{module['version']}.zip is not in the cache" in error[0]
    assert "--offline forbids downloading" in error[0]


def test_offline_asks_no_registry_for_base_images(capfd: pytest.CaptureFixture[str]) -> None:
    """--offline keeps the daemon off the network too: a base image it lacks is not pulled
    (on this machine no registry answers; the bootstrapped base stands in, as online)."""
    from kube_router_sctp import bases, config, plan

    engine = env.docker_engine()
    built = plan.build(config.load({"build.base-family": "debian", "build.offline": True}))
    configured = {built.builder_image, built.runtime_image}
    if all(engine.image(ref) is not None for ref in configured):
        env.missing(f"needs a daemon without {', '.join(sorted(configured))} (here they were loaded)")
    if engine.image(bases.bootstrap_reference("bookworm")) is None:
        env.missing("needs the bootstrapped Debian base on the daemon (any debian-family build makes it)")
    resolved = bases.resolve(built, engine)
    assert resolved.bootstrapped
    assert "pulling" not in capfd.readouterr().err
