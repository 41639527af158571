"""doctor's findings for verify: the host tools and the control plane's binaries."""

from __future__ import annotations

import hashlib
import json

from kube_router_sctp.controlplane import build


def test_doctor_says_what_verify_needs_and_whether_the_control_plane_is_built(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kube_router_sctp import config, doctor
    from kube_router_sctp.cache import Cache

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "kubectl").write_text("#!/bin/sh\n")
    (tools / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))  # kubectl here; etcd and openssl not
    settings = config.load({"paths.cache-dir": str(tmp_path / "cache")})

    def findings() -> dict[str, doctor.Finding]:
        return {f.check: f for f in doctor.verify_checks(settings)}

    seen = findings()
    assert seen["verify: kubectl"].status == doctor.OK
    assert (seen["verify: etcd"].status, seen["verify: etcd"].todo) == (doctor.WARN, "apt-get install etcd-server")
    plane = seen["verify: control plane"]
    assert plane.status == doctor.INFO and "not built yet" in plane.seen and "builds them" in plane.todo

    # the binaries in the cache under the pin's key: found, by version
    cache, pin = Cache(settings.cache_dir), build.load_pin()
    key = build.build_key(pin, build._toolchain_sha(settings, pin.go, build._arch()), build._arch())
    shas = {}
    for command in pin.commands:
        part = cache.tmp_dir() / command
        part.write_bytes(command.encode())
        shas[command] = hashlib.sha256(command.encode()).hexdigest()
        cache.put_blob(part, shas[command])
    record = {"binaries": {command: {"sha256": sha} for command, sha in shas.items()}}
    build._record_path(cache, key).write_text(json.dumps(record))
    plane = findings()["verify: control plane"]
    assert (plane.status, plane.seen) == (
        doctor.OK,
        f"kube-apiserver and kube-controller-manager {pin.kubernetes} cached",
    )

    # a damaged blob is not "cached": doctor says it will be built again
    cache.blob_path(shas["kube-apiserver"]).chmod(0o644)
    cache.blob_path(shas["kube-apiserver"]).write_bytes(b"damaged")
    assert findings()["verify: control plane"].status == doctor.INFO
