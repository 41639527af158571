"""QEMU on a real kernel (Debian's linux-image-amd64, fetched by apt into the pipeline's
cache): kernel smoke mode's verdict comes back as the guest's exit status, and the
Docker-host VM serves a smoke check of an image pulled from the host's registry.

Needs qemu-system-x86_64, apt with the Debian mirror, the local Docker daemon with the
good image (KRS_TEST_GOOD_IMAGE, default the shared v0.3.2 debian build, as
the build job leaves it), and for the Docker host: root, debootstrap, the registry.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from collections.abc import Iterator

import pytest

from kube_router_sctp import config, smoke
from kube_router_sctp.cache import Cache
from kube_router_sctp.errors import PipelineError, SmokeError, VMError
from kube_router_sctp.vm import dockerhost, kernelsmoke
from kube_router_sctp.vm.cpio import open_initramfs
from kube_router_sctp.vm.kernel import KernelFiles, resolve
from kube_router_sctp.vm.qemu import Guest, Machine
from tests.support import env

pytestmark = [pytest.mark.vm, pytest.mark.docker]

GOOD = os.environ.get("KRS_TEST_GOOD_IMAGE", f"kube-router:{env.release_tag('v0.3.2', '-debian-candidate')}")
KUBE_ROUTER = os.environ.get("KRS_TEST_GOOD_KUBE_ROUTER_VERSION", env.release_tag("v0.3.2"))
IPVSADM = os.environ.get("KRS_TEST_GOOD_IPVSADM_VERSION", "1.31")


def context_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cache() -> Cache:
    return Cache(config.load({}).cache_dir)


@pytest.fixture(scope="module")
def debian_kernel(cache: Cache) -> KernelFiles:
    env.require_binary("qemu-system-x86_64", "qemu-system-x86")
    try:
        return resolve("debian", None, cache)
    except PipelineError as exc:
        env.missing(f"needs Debian's kernel package: {exc.one_line()}")
        raise


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    return env.docker_engine()


@pytest.fixture(scope="module")
def good_image(engine, debian_image: str) -> str:  # type: ignore[no-untyped-def]
    if os.environ.get("KRS_TEST_GOOD_IMAGE"):
        return GOOD
    return debian_image


@pytest.fixture(scope="module")
def broken_image(engine, good_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The good image without ipvsadm: the smoke check must name the missing binary."""
    tag = f"krs-test-broken:{env.namespace('vm')}"
    dockerfile = f"FROM {good_image}\nRUN rm /usr/local/sbin/ipvsadm\n".encode()
    path = tmp_path_factory.mktemp("broken") / "context.tar"
    path.write_bytes(context_tar({"Dockerfile": dockerfile}))
    try:
        engine.build(path, tag, on_output=lambda _text: None)
        yield tag
    finally:
        engine.remove_image(tag)


def test_kernel_smoke_passes_a_good_image(engine, good_image, debian_kernel, cache, record_property) -> None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = kernelsmoke.run(engine, good_image, debian_kernel, KUBE_ROUTER, IPVSADM, cache=cache)
    took = time.monotonic() - start
    record_property("kernel_smoke_seconds", round(took, 1))
    print(f"kernel smoke mode, good image: {took:.1f}s")
    assert result.passed
    assert "under QEMU" in result.host and debian_kernel.version in result.host
    assert "SCTP 10.254.125.172:32000 rr" in result.table
    assert "-> 172.20.1.6:32000" in result.table
    assert not list((cache.root / "tmp").glob("kernelsmoke-*")), "the work directory was left behind"


def test_kernel_smoke_fails_a_broken_image_by_exit_status(engine, broken_image, debian_kernel, cache) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SmokeError) as caught:
        kernelsmoke.run(engine, broken_image, debian_kernel, KUBE_ROUTER, IPVSADM, cache=cache)
    missing_binary = smoke.CLASSES[13][0]
    assert missing_binary in caught.value.message
    assert "ipvsadm" in caught.value.message
    assert caught.value.hint == smoke.CLASSES[13][1]


def test_kernel_smoke_reports_a_missing_image(engine, debian_kernel, cache) -> None:  # type: ignore[no-untyped-def]
    from kube_router_sctp.errors import DockerError

    with pytest.raises(DockerError, match="is not on"):
        kernelsmoke.run(engine, "krs-test-absent:none", debian_kernel, KUBE_ROUTER, IPVSADM, cache=cache)


def test_an_image_without_a_shell_is_a_vm_error_not_a_hang(engine, debian_kernel, cache, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The kernel finds no working init, panics, and panic=-1 + -no-reboot end QEMU at once."""
    tag = f"krs-test-noshell:{env.namespace('vm')}"
    context = tmp_path / "context.tar"
    context.write_bytes(context_tar({"Dockerfile": b"FROM scratch\nCOPY hello.txt /\n", "hello.txt": b"hi\n"}))
    try:
        engine.build(context, tag, on_output=lambda _text: None)
        start = time.monotonic()
        with pytest.raises(VMError, match="panicked"):
            kernelsmoke.run(engine, tag, debian_kernel, KUBE_ROUTER, IPVSADM, cache=cache, timeout=120)
        assert time.monotonic() - start < 100, "a crashed guest must end QEMU, not wait for the time-out"
    finally:
        engine.remove_image(tag)


def test_a_guest_that_hangs_is_stopped_at_its_time_out(debian_kernel, cache) -> None:  # type: ignore[no-untyped-def]
    work = cache.scratch("test-hang-")
    try:
        initrd = work / "initrd.cpio"
        with open_initramfs(initrd) as writer:
            writer.device("dev/console", "c", 5, 1)
        # No init and panic=0: the kernel waits forever, as a stalled guest would.
        machine = Machine(kernel=debian_kernel.vmlinuz, initrd=initrd, append="console=ttyS0 panic=0 quiet")
        with Guest(machine, work, "hang") as guest:
            with pytest.raises(VMError, match="did not finish within 15s"):
                guest.wait(15)
            assert not guest.running()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.registry
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_docker_host_vm_runs_the_smoke_check_on_a_pulled_image(  # type: ignore[no-untyped-def]
    engine, good_image, debian_kernel, cache, record_property
) -> None:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        env.missing("building the Docker-host disk needs root and debootstrap")
    registry = env.registry()
    namespace = env.namespace("vm")
    if not registry.startswith(("127.0.0.1:", "localhost:")):
        pytest.skip(f"the VM reaches only the host's loopback registry, not {registry}")
    engine.tag(good_image, f"{registry}/{namespace}/kube-router", "smoke")
    try:
        engine.push(f"{registry}/{namespace}/kube-router", "smoke")
    finally:
        engine.remove_image(f"{registry}/{namespace}/kube-router:smoke")  # the local tag only
    disk = dockerhost.build_disk(cache)
    record_property("disk_build_seconds", round(disk.build_seconds, 1))
    with dockerhost.docker_host(debian_kernel, cache, boot_timeout=300) as host:
        assert host.url.startswith("tcp://127.0.0.1:")
        version = host.engine.version()
        assert version["KernelVersion"] == debian_kernel.version
        reference = f"{host.guest_registry(registry)}/{namespace}/kube-router:smoke"
        pull_seconds = host.timed_pull(reference)
        start = time.monotonic()
        result = smoke.on_docker(
            host.engine, reference, pull=True, kube_router_version=KUBE_ROUTER, ipvsadm_version=IPVSADM
        )
        smoke_seconds = time.monotonic() - start
        record_property("boot_seconds", round(host.boot_seconds, 1))
        record_property("pull_seconds", round(pull_seconds, 1))
        record_property("smoke_seconds", round(smoke_seconds, 1))
        print(
            f"docker-host VM: disk build {disk.build_seconds:.0f}s (0 = cached), boot to dockerd "
            f"{host.boot_seconds:.1f}s, pull {pull_seconds:.1f}s, smoke {smoke_seconds:.1f}s"
        )
        assert result.passed
        assert "SCTP 10.254.125.172:32000 rr" in result.table
        guest = host.guest
    assert not guest.running(), "QEMU outlived the context manager"
