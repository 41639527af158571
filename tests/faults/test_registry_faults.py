"""Registry faults with the real registry: down, cut mid-push, TLS + htpasswd (good, wrong,
missing credentials), read-only. Expected: retries where it may help, then one clear
line; never a release tag on anything unverified; credentials never in any output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import env
from tests.support.registry import docker_config, registry
from tests.support.tcpproxy import CuttableProxy

pytestmark = [pytest.mark.docker, pytest.mark.upstream, pytest.mark.slow]

PASSWORD = "s3cret-Pa55-krs-test"


@pytest.fixture
def pipeline(v032_debian_args: list[str]):  # type: ignore[no-untyped-def]
    """Run the shared build's whole job against a registry."""

    def run(push: str, report: Path, *extra: str, env_vars: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return env.run_cli(*v032_debian_args, "--push", push, "--report", str(report), *extra, env=env_vars)

    return run


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("kube-router-sctp: error:")]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert "czNjcmV0" not in text  # no base64 of it either (user:password starts differently; belt and braces)


def test_registry_down_before_push(tmp_path: Path, debian_image: str, pipeline) -> None:
    report = tmp_path / "r.json"
    result = pipeline(f"127.0.0.1:9/{env.namespace('down')}", report, "--no-smoke")
    assert result.returncode == 7
    line = error_line(result.stderr)
    assert "connection refused" in line and "start the registry or fix the --push address" in line
    assert result.stderr.count("retry") >= 2  # retried before giving up
    assert json.loads(report.read_text())["status"] == "failed"


def test_registry_stopped_in_the_middle_of_a_push(tmp_path: Path, debian_image: str, pipeline) -> None:
    with registry(tmp_path / "reg") as reg:
        host, port = reg.address.split(":")
        proxy = CuttableProxy((host, int(port)))
        proxy.cut_after = 8 << 20  # the registry 'dies' 8 MiB into the upload
        namespace = env.namespace("cut")
        try:
            report = tmp_path / "r.json"
            result = pipeline(f"{proxy.address}/{namespace}", report, "--kernel", "debian")
            assert proxy.cut.is_set(), "the cut should have happened"
            assert result.returncode == 7, result.stderr[-2000:]
            assert "push of" in error_line(result.stderr)
            assert reg.tags(f"{namespace}/kube-router") == []  # no tag at all: no manifest was completed
            data = json.loads(report.read_text())
            assert "smoke" not in data["stages"] and "promote" not in data["stages"]
        finally:
            proxy.close()


@pytest.fixture
def tls_registry(tmp_path: Path):  # type: ignore[no-untyped-def]
    with registry(tmp_path / "tls", host="172.17.0.1", tls=True, users={"ci": PASSWORD}) as reg:
        yield reg


def test_tls_htpasswd_with_good_credentials(tmp_path: Path, tls_registry, debian_image: str, pipeline) -> None:
    config = docker_config(tmp_path, tls_registry.address, "ci", PASSWORD)
    report = tmp_path / "r.json"
    result = pipeline(tls_registry.push, report, "--kernel", "debian", env_vars={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr[-3000:]
    tags = tls_registry.tags(f"{tls_registry.namespace}/kube-router", auth=("ci", PASSWORD))
    assert tags == [env.release_tag("v0.3.2"), env.release_tag("v0.3.2", "-debian-candidate")]
    assert_no_secret(result.stdout, result.stderr, report.read_text())


def test_tls_htpasswd_with_a_wrong_password(tmp_path: Path, tls_registry, debian_image: str, pipeline) -> None:
    config = docker_config(tmp_path, tls_registry.address, "ci", PASSWORD + "-wrong")
    report = tmp_path / "r.json"
    result = pipeline(tls_registry.push, report, "--no-smoke", env_vars={"DOCKER_CONFIG": str(config)})
    assert result.returncode == 7
    line = error_line(result.stderr)
    assert "unauthorized" in line.lower() or "authentication required" in line.lower()
    assert "docker login" in line
    assert "retry" not in result.stderr  # a refusal is not retried
    assert tls_registry.tags(f"{tls_registry.namespace}/kube-router", auth=("ci", PASSWORD)) == []
    assert_no_secret(result.stdout, result.stderr, report.read_text())


def test_tls_htpasswd_without_credentials(tmp_path: Path, tls_registry, debian_image: str, pipeline) -> None:
    empty = tmp_path / "empty-docker-config"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    result = pipeline(tls_registry.push, tmp_path / "r.json", "--no-smoke", env_vars={"DOCKER_CONFIG": str(empty)})
    assert result.returncode == 7
    assert "docker login" in error_line(result.stderr)
    assert tls_registry.tags(f"{tls_registry.namespace}/kube-router", auth=("ci", PASSWORD)) == []


def test_read_only_registry(tmp_path: Path, debian_image: str, pipeline) -> None:
    with registry(tmp_path / "ro", readonly=True) as reg:
        result = pipeline(reg.push, tmp_path / "r.json", "--no-smoke")
        assert result.returncode == 7
        line = error_line(result.stderr)
        assert "push of" in line
        assert reg.tags(f"{reg.namespace}/kube-router") == []


def test_doctor_sees_the_login_requirement(tmp_path: Path, tls_registry) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "cfg"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    result = env.run_cli(
        "doctor",
        "--push",
        tls_registry.address,
        env={"DOCKER_CONFIG": str(empty), "REQUESTS_CA_BUNDLE": str(tls_registry.ca)},
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("[FAIL] registry"))
    assert "requires login" in line
