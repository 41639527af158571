"""Configuration layering and validation: defaults < user config < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_router_sctp import config
from kube_router_sctp.errors import ConfigError


def write_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("KUBE_ROUTER_SCTP_CONFIG", str(path))
    return path


def test_defaults_are_the_field_report_setup() -> None:
    settings = config.load()
    assert settings.kube_router_version == "v0.3.2"
    assert settings.ipvsadm_version == "1.30"
    assert settings.base_family == "alpine"
    assert settings.pins.families["alpine"].runtime == "alpine:3.10.3"
    assert settings.sources["build.ipvsadm-version"] == "defaults"


def test_user_config_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_user(tmp_path, monkeypatch, '[build]\nipvsadm-version = "1.31"\nbase-family = "debian"\n')
    settings = config.load()
    assert settings.ipvsadm_version == "1.31"
    assert settings.base_family == "debian"
    assert settings.sources["build.ipvsadm-version"] == str(path)


def test_environment_overrides_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user(tmp_path, monkeypatch, '[build]\nipvsadm-version = "1.31"\n')
    monkeypatch.setenv("KUBE_ROUTER_SCTP_IPVSADM_VERSION", "1.29")
    settings = config.load()
    assert settings.ipvsadm_version == "1.29"
    assert settings.sources["build.ipvsadm-version"] == "KUBE_ROUTER_SCTP_IPVSADM_VERSION"


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBE_ROUTER_SCTP_IPVSADM_VERSION", "1.29")
    settings = config.load({"build.ipvsadm-version": "1.31"})
    assert settings.ipvsadm_version == "1.31"
    assert settings.sources["build.ipvsadm-version"] == "--ipvsadm-version"  # which flag, not just "flag"


def test_list_and_bool_options_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBE_ROUTER_SCTP_IPVSADM_MIRRORS", "https://a.example/ipvsadm, file:///srv/ipvsadm")
    monkeypatch.setenv("KUBE_ROUTER_SCTP_OFFLINE", "yes")
    settings = config.load()
    assert settings.mirrors.ipvsadm == ("https://a.example/ipvsadm", "file:///srv/ipvsadm")
    assert settings.offline is True


def test_user_config_may_add_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user(
        tmp_path,
        monkeypatch,
        '[kube-router.releases]\n"v2.7.9" = { commit = "'
        + "a" * 40
        + '", date = 1, tree-sha256 = "'
        + "b" * 64
        + '" }\n',
    )
    releases = config.load().pins.releases
    assert "v2.7.9" in releases
    assert "v0.3.2" in releases  # merged, not replaced


def test_unknown_option_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user(tmp_path, monkeypatch, "[build]\nkube-router-verison = 'v0.3.2'\n")
    with pytest.raises(ConfigError, match="unknown option build.kube-router-verison") as caught:
        config.load()
    assert "did you mean build.kube-router-version?" in caught.value.one_line()


def test_broken_toml_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_user(tmp_path, monkeypatch, "[build\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("build.kube-router-version", "v0.3.2\nRUN curl evil | sh", "invalid kube-router version"),
        ("build.kube-router-version", "v1.0.0-rc1", "invalid kube-router version"),
        ("build.kube-router-version", "latest", "invalid kube-router version"),
        ("build.ipvsadm-version", "1.31; rm -rf /", "invalid ipvsadm version"),
        ("build.runtime-base", "alpine:3.10\nRUN id", "invalid runtime base image"),
        ("build.runtime-base", "alpine:$(id)", "invalid runtime base image"),
        ("build.base-family", "centos", "unknown base family"),
        ("build.push", "registry", "invalid --push target"),
        ("build.push", "registry:5000/Team", "invalid --push target"),
        ("mirrors.debian", "ftp://mirror.example/debian", "invalid Debian mirror"),
        ("mirrors.go-proxy", 'https://proxy.example/"', "invalid Go module proxy"),
        ("build.image-name", "Kube-Router", "invalid image name"),
        ("smoke.fallback-kernel", "/nonexistent/linux-image.deb", "'none' nor an existing linux-image"),
        ("smoke.fallback-kernel", "ubuntu", "'none' nor an existing linux-image"),
    ],
)
def test_bad_values_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load({key: value})


def test_bad_label_is_refused() -> None:
    with pytest.raises(ConfigError, match="invalid label team value"):
        config.load({"labels": {"team": 'net"\nRUN id'}})


def test_missing_ca_bundle_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA bundle .* does not exist"):
        config.load({"mirrors.ca-bundle": str(tmp_path / "nope.pem")})


def test_fallback_kernel_defaults_to_debian_and_none_turns_it_off() -> None:
    assert config.load().smoke_fallback_kernel == "debian"
    assert config.load({"smoke.fallback-kernel": "none"}).smoke_fallback_kernel is None


def test_push_target_is_split() -> None:
    assert config.load({"build.push": "registry:5000"}).push == ("registry:5000", "")
    assert config.load({"build.push": "127.0.0.1:5000/team/sub"}).push == ("127.0.0.1:5000", "team/sub")


def test_host_debian_mirror_reads_deb822(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
    )
    assert config.host_debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_host_debian_mirror_reads_one_line_format(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    assert config.host_debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_kernels_are_a_list_of_specs_or_paths(tmp_path: Path) -> None:
    deb = tmp_path / "linux-image.deb"
    deb.write_bytes(b"x")
    settings = config.load({"smoke.kernel": ["debian:trixie", "debian:sid", str(deb)]})
    assert settings.smoke_kernels == ("debian:trixie", "debian:sid", str(deb))
    assert config.load().smoke_kernels == ()
    with pytest.raises(ConfigError, match="does not exist"):
        config.load({"smoke.kernel": [str(tmp_path / "absent.deb")]})


@pytest.mark.parametrize("path", ["a/b.go", "vendor/golang.org/x/textual/b.go", "vendor/golang.org/x/text"])
def test_a_vendor_restore_rule_outside_its_module_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # The file is read from the module's zip under the path below vendor/<module>/: a rule
    # whose path is elsewhere ended in an IndexError traceback once its zip was fetched.
    write_user(
        tmp_path,
        monkeypatch,
        f"""
[[kube-router.vendor-restore]]
path = "{path}"
module = "golang.org/x/text"
version = "v0.3.0"
zip-sha256 = "{"a" * 64}"
""",
    )
    with pytest.raises(ConfigError, match="is not a file below vendor/golang.org/x/text/") as caught:
        config.load()
    assert "kube-router.vendor-restore" in caught.value.one_line()


def test_asking_go_for_its_proxy_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `go env GOPROXY` counts itself in <config dir>/go/telemetry, and may fetch a toolchain
    # a go.mod in the working directory asks for: `config` wrote outside the cache on every
    # run (~/.config/go/telemetry, or $XDG_CONFIG_HOME/go wherever that pointed); and a
    # scratch config directory alone is not enough: go's telemetry child refilled it in
    # /tmp after it was removed.
    import os
    import tempfile
    import time

    from tests.support import env as support

    go = support.require_binary("go", "golang-go")
    home, cfg = tmp_path / "home", tmp_path / "cfg"
    home.mkdir()
    (cfg / "go").mkdir(parents=True)
    (cfg / "go" / "env").write_text("GOPROXY=https://goenv.example/mod\n")
    variables = {k: v for k, v in os.environ.items() if not k.startswith("GO")}  # as the tool runs
    variables |= {"HOME": str(home), "XDG_CONFIG_HOME": str(cfg), "PATH": f"{Path(go).parent}:/usr/bin:/bin"}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert config.host_go_proxy(variables) == ("https://goenv.example/mod", "go env GOPROXY")  # the user's go env
    time.sleep(2)  # go's telemetry child, when it runs at all, writes after go itself has exited
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "cfg", "cfg/go", "cfg/go/env", "home", "tmp"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[build]\nplatforms = " + "[" * 3000 + "]" * 3000 + "\n", "nests tables or arrays more than"),
        ("x = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n", "nests tables or arrays more than"),
        ("[" + ".".join(["a"] * 3000) + "]\n", "nests tables or arrays more than"),
        ("[labels]\nx = " + "{a=" * 40 + "1" + "}" * 40 + "\n", "nests tables or arrays more than"),
        ("[build]\nsource-date-epoch = " + "9" * 5000 + "\n", "is not valid TOML"),
    ],
)
def test_a_config_nested_too_deep_or_with_a_huge_number_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    # tomllib and the layer merge recurse, and int() refuses 4,300+ digits: each ended in
    # a RecursionError or ValueError traceback.
    path = write_user(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError, match=message) as caught:
        config.load()
    assert str(path) in caught.value.one_line()
