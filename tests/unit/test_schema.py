"""The one options schema: strict types, unknown keys, layers named, one line per refusal.

Configurations go in as a user config file, variables and flags through the real command
line (click's runner) or through ``config.load(env=...)``: no monkeypatching.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner

from kube_router_sctp import config, options
from kube_router_sctp.cli import main
from kube_router_sctp.errors import ConfigError

ENV = {"GOPROXY": "off"}  # keeps `go env` out of these tests


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def toml(tree: Mapping[str, Mapping[str, object]]) -> str:
    """Each top-level key a [section] of key = value lines (deeper tables inline)."""
    return "".join(
        f"[{json.dumps(section)}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in body.items())
        for section, body in tree.items()
    )


def user_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def load_file(tmp_path: Path, text: str | bytes, **env: str) -> config.Settings:
    path = user_file(tmp_path, text)
    return config.load(env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(path), **env})


def cli(
    tmp_path: Path, *args: str, text: str | bytes = "", env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    path = user_file(tmp_path, text)
    runner_env = {**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(path), **(env or {})}
    result = CliRunner().invoke(main, list(args), env=runner_env)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kube-router-sctp: error:") and " — " in lines[0], lines[0]
    return lines[0]


def refused(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    line = excinfo.value.one_line()
    assert "\n" not in line and " — " in line, line
    return line


# --- types are strict, and each refusal names the key, the layer and the type -----------------
@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[build]\noffline = "false"\n', "build.offline", "expected a boolean"),
        ('[build]\nnegative-control = "false"\n', "build.negative-control", "expected a boolean"),
        ("[smoke]\nenabled = 0\n", "smoke.enabled", "expected a boolean"),
        ("[build]\nkube-router-version = 3\n", "build.kube-router-version", "expected a string"),
        ('[build]\nplatforms = "linux/amd64"\n', "build.platforms", "expected an array of strings"),
        ("[build]\nplatforms = [1, 2]\n", "build.platforms[0]", "expected a string"),
        ("[mirrors]\nipvsadm = [true]\n", "mirrors.ipvsadm[0]", "expected a string"),
        ('labels = "team=net"\n', "labels", "expected a table"),
        ('build = "v0.3.2"\n', "build", "expected a table"),
        ('families = "alpine"\n', "families", "expected a table"),
        ('[families]\ndebian = "debian:bookworm"\n', "families.debian", "expected a table"),
        ('[kube-router.releases]\n"v0.3.2" = "4afd6d6d"\n', 'kube-router.releases."v0.3.2"', "expected a table"),
        (
            '[kube-router.releases]\n"v0.3.2" = { commit = "' + "a" * 40 + '", date = 2019-07-24, tree-sha256 = "'
            + "b" * 64 + '" }\n',
            'kube-router.releases."v0.3.2".date', "is a date or time, expected an integer",
        ),
        (
            '[kube-router.releases]\n"v0.3.2" = { commit = "' + "a" * 40 + '", date = "1563950150", tree-sha256 = "'
            + "b" * 64 + '" }\n',
            'kube-router.releases."v0.3.2".date', "is a string, expected an integer",
        ),
        ('[kube-router]\nlines = "dep"\n', "kube-router.lines", "expected an array"),
        ('[kube-router]\nlines = ["dep"]\n', "kube-router.lines[0]", "expected a table"),
        ('[ipvsadm.releases."1.31"]\nfiles = { name = "ipvsadm-1.31.tar.xz" }\n', 'ipvsadm.releases."1.31".files', "expected an array"),  # noqa: E501
        ('[ipvsadm.releases."1.31"]\nfiles = [{ name = "ipvsadm-1.31.tar.xz", sha256 = 5 }]\n', 'ipvsadm.releases."1.31".files[0].sha256', "expected a string"),  # noqa: E501
        ('[go.toolchains]\n"1.22.3" = "abc"\n', 'go.toolchains."1.22.3"', "expected a table"),
    ],
)  # fmt: skip
def test_a_wrong_type_in_a_file_is_one_line_naming_key_file_and_type(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    code, out, err = cli(tmp_path, "render", text=text)
    assert code == 2 and out == ""
    line = one_line(err)
    assert f"{key} = " in line or f"{key}:" in line, line
    assert str(tmp_path / "config.toml") in line and expected in line


def test_offline_false_as_a_string_is_not_true(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_file(tmp_path, '[build]\noffline = "false"\n')
    assert refused(caught).startswith('build.offline = "false" (set by ')
    assert load_file(tmp_path, "[build]\noffline = false\n").offline is False


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("0", False), ("true", True), ("FALSE", False), ("yes", True), ("no", False)])  # fmt: skip  # noqa: E501
def test_environment_booleans_keep_their_words(tmp_path: Path, raw: str, value: bool) -> None:
    settings = load_file(tmp_path, "", KUBE_ROUTER_SCTP_OFFLINE=raw, KUBE_ROUTER_SCTP_SMOKE=raw)
    assert settings.offline is value and settings.smoke is value
    assert settings.sources["build.offline"] == "KUBE_ROUTER_SCTP_OFFLINE"


def test_an_environment_boolean_that_is_no_boolean(tmp_path: Path) -> None:
    code, out, err = cli(tmp_path, "render", env={"KUBE_ROUTER_SCTP_OFFLINE": "sometimes"})
    assert code == 2 and out == ""
    assert "KUBE_ROUTER_SCTP_OFFLINE='sometimes'" not in one_line(err)  # shown as TOML, not repr
    assert 'KUBE_ROUTER_SCTP_OFFLINE="sometimes" is not a boolean' in one_line(err)


def test_the_same_bad_value_is_refused_alike_from_every_layer(tmp_path: Path) -> None:
    """One kind checks a key whichever layer set it; only the layer named differs."""
    bad = "alpine:3.10;id"
    from_flag = cli(tmp_path, "render", "--runtime-base", bad)
    from_env = cli(tmp_path, "render", env={"KUBE_ROUTER_SCTP_RUNTIME_BASE": bad})
    from_file = cli(tmp_path, "render", text=toml({"build": {"runtime-base": bad}}))
    lines = [one_line(result[2]) for result in (from_flag, from_env, from_file)]
    assert all(result[0] == 2 for result in (from_flag, from_env, from_file))
    assert "set by flag --runtime-base" in lines[0]
    assert "set by KUBE_ROUTER_SCTP_RUNTIME_BASE" in lines[1]
    assert f"set by {tmp_path / 'config.toml'}" in lines[2]
    assert len({line.split(" (build.runtime-base")[0] for line in lines}) == 1, lines


# --- unknown keys, in every layer, suggest the nearest -----------------------------------------
@pytest.mark.parametrize(
    ("text", "env", "unknown", "suggestion"),
    [
        ("[build]\nkube-router-verison = 'v0.3.2'\n", {}, "unknown option build.kube-router-verison", "build.kube-router-version"),  # noqa: E501
        ("[buidl]\noffline = true\n", {}, "unknown section [buidl]", "build"),
        ("[families.debian]\nsuit = 'trixie'\n", {}, "unknown key families.debian.suit", "suite"),
        ("[families.centos]\nruntime = 'centos:7'\n", {}, "unknown base family \"centos\"", "choose one of: alpine, debian"),  # noqa: E501
        ("[families.debain]\nruntime = 'debian:12'\n", {}, "unknown base family \"debain\"", "did you mean debian?"),
        ("[[kube-router.lines]]\nnmae = 'x'\n", {}, "unknown key kube-router.lines[0].nmae", "name"),
        ("", {"KUBE_ROUTER_SCTP_OFLINE": "1"}, "unknown environment variable KUBE_ROUTER_SCTP_OFLINE", "KUBE_ROUTER_SCTP_OFFLINE"),  # noqa: E501
    ],
)  # fmt: skip
def test_unknown_keys_are_errors_with_the_nearest_key(
    tmp_path: Path, text: str, env: dict[str, str], unknown: str, suggestion: str
) -> None:
    code, out, err = cli(tmp_path, "render", text=text, env=env)
    assert code == 2 and out == ""
    line = one_line(err)
    assert unknown in line and suggestion in line.split(" — ", 1)[1], line


# --- the environment is a parameter; the listing names each value's layer ------------------------
def test_layers_are_named_in_the_listing(tmp_path: Path) -> None:
    path = user_file(tmp_path, '[build]\nipvsadm-version = "1.31"\nplatforms = ["linux/arm64"]\n')
    env = {**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(path), "KUBE_ROUTER_SCTP_PUSH": "127.0.0.1:5000/team"}
    settings = config.load({"build.base-family": "debian", "labels": {"team": "net"}}, env=env)
    rows = {key: (value, origin) for key, value, origin in config.rows(settings)}
    assert rows["build.ipvsadm-version"] == ("1.31", str(path))
    assert rows["build.platforms"] == ("linux/arm64", str(path))
    assert rows["build.push"] == ("127.0.0.1:5000/team", "KUBE_ROUTER_SCTP_PUSH")
    assert rows["build.base-family"] == ("debian", "--base-family")
    assert rows["labels"] == ("team=net", "--label")
    assert rows["build.kube-router-version"] == ("v0.3.2", "defaults")
    assert rows["mirrors.go-proxy"] == ("off", "host GOPROXY")
    assert set(rows) == set(options.OPTIONS)


def test_config_command_prints_every_option_with_its_layer(tmp_path: Path) -> None:
    code, out, _ = cli(tmp_path, "config", "--kernel", "debian", text="[build]\nno-cache = true\n")
    assert code == 0
    assert "build.no-cache = true    # " + str(tmp_path / "config.toml") in out
    assert "smoke.kernel = debian    # flag --kernel" in out
    for key in options.OPTIONS:
        assert f"\n{key} = " in out, key


def test_every_option_is_a_flag_of_the_group_and_of_every_stage() -> None:
    flags = {opt.flag_name for opt in options.OPTIONS.values() if opt.flag_name}
    assert len(flags) == len([o for o in options.OPTIONS.values() if o.flag_name])
    for command in [main, *main.commands.values()]:  # type: ignore[attr-defined]
        declared = {name for param in command.params for name in param.opts}
        assert flags <= declared, (command.name, flags - declared)


def test_variable_names_are_unique_and_derived_from_the_keys() -> None:
    names = [opt.env_name for opt in options.OPTIONS.values() if opt.env_name]
    assert len(names) == len(set(names))
    assert options.OPTIONS["build.kube-router-version"].env_name == "KUBE_ROUTER_SCTP_KUBE_ROUTER_VERSION"
    assert options.OPTIONS["smoke.fallback-kernel"].env_name == "KUBE_ROUTER_SCTP_SMOKE_FALLBACK_KERNEL"
    assert options.OPTIONS["docker.host"].env_name == "KUBE_ROUTER_SCTP_DOCKER_HOST"


def test_the_readme_command_still_parses(tmp_path: Path) -> None:
    settings = config.load(
        {
            "build.kube-router-source": str(tmp_path),
            "build.kube-router-version": "v0.3.2",
            "build.base-family": "debian",
            "build.ipvsadm-version": "1.31",
            "build.push": "127.0.0.1:5000",
        },
        env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(tmp_path / "none.toml")},
    )
    assert settings.push == ("127.0.0.1:5000", "") and settings.ipvsadm_version == "1.31"


# --- inputs that used to end in a traceback -----------------------------------------------------
def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    code, out, err = cli(tmp_path, "render", text=b'[build]\nimage-name = "kube-r\xe9uter"\n')
    assert code == 2 and out == ""
    assert "is not UTF-8 text" in one_line(err)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("yesterday", "is not a whole number"),
        ("-5", "is not a whole number"),
        ("1e9", "is not a whole number"),
        ("99999999999999999999999", "out of range"),
        ("253402300800", "out of range"),
    ],
)
def test_source_date_epoch_out_of_range_or_not_a_number(tmp_path: Path, raw: str, problem: str) -> None:
    code, out, err = cli(tmp_path, "render", env={"SOURCE_DATE_EPOCH": raw})
    assert code == 2 and out == ""
    line = one_line(err)
    assert "SOURCE_DATE_EPOCH" in line and problem in line


def test_source_date_epoch_sets_the_image_dates(tmp_path: Path) -> None:
    code, out, _ = cli(tmp_path, "render", env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert code == 0 and '"org.opencontainers.image.created"="2023-11-14T22:13:20Z"' in out


@pytest.mark.parametrize(
    "flag", ["--kube-router-source", "--ca-bundle", "--kernel", "--modules", "--fallback-kernel", "--cache-dir"]
)
def test_tilde_of_no_such_user_and_overlong_paths(tmp_path: Path, flag: str) -> None:
    code, out, err = cli(tmp_path, "render", flag, "~no-such-user-krs/x.deb")
    assert code == 2 and out == ""
    assert "~no-such-user-krs" in one_line(err)
    code, out, err = cli(tmp_path, "render", flag, "/" + "a" * 300 + "/x.deb")
    assert code == 2 and out == ""
    assert "at most 4095 bytes, each name at most 255" in one_line(err)


def test_tilde_of_no_such_user_in_the_config_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render"], env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": "~no-such-user-krs/c.toml"})
    assert result.exit_code == 2
    assert "KUBE_ROUTER_SCTP_CONFIG" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--kube-router-version", "v00.3.2"], "invalid kube-router version"),
        (["--kube-router-version", "v0.03.2"], "invalid kube-router version"),
        (["--kube-router-version", "v0.3.02"], "invalid kube-router version"),
        (["--kube-router-version", "v9999999999.0.0"], "invalid kube-router version"),
        (["--ipvsadm-version", "01.31"], "invalid ipvsadm version"),
        (["--ipvsadm-version", "1.031"], "invalid ipvsadm version"),
        (["--platform", "linux/amd64"] * 9, "build.platforms: has 9 item(s)"),
    ],
)
def test_leading_zeros_and_huge_numbers_are_refused_cleanly(tmp_path: Path, args: list[str], text: str) -> None:
    code, out, err = cli(tmp_path, "render", *args)
    assert code == 2 and out == ""
    assert text in one_line(err)


@pytest.mark.parametrize("date", ["-1", "253402300800", "99999999999999999999"])
def test_pinned_dates_out_of_range(tmp_path: Path, date: str) -> None:
    text = (
        f'[kube-router.releases]\n"v0.3.2" = {{ commit = "{"a" * 40}", date = {date}, tree-sha256 = "{"b" * 64}" }}\n'
    )
    code, out, err = cli(tmp_path, "render", text=text)
    assert code == 2 and out == ""
    line = one_line(err)
    assert 'kube-router.releases."v0.3.2".date' in line and ("out of range" in line or "not valid TOML" in line)


def test_pin_of_a_version_with_leading_zeros(tmp_path: Path) -> None:
    code, _, err = cli(tmp_path, "pin", "--kube-router-source", str(tmp_path), "v0.3.02")
    assert code == 2
    assert "invalid kube-router version" in one_line(err)


def test_flag_labels_merge_over_file_labels(tmp_path: Path) -> None:
    path = user_file(tmp_path, '[labels]\n"org.example.team" = "net"\n"org.example.site" = "lab"\n')
    env = {**ENV, "KUBE_ROUTER_SCTP_CONFIG": str(path)}
    settings = config.load({"labels": {"org.example.site": "edge"}}, env=env)
    assert dict(settings.labels) == {"org.example.team": "net", "org.example.site": "edge"}
    assert settings.sources["labels"] == "--label"


def test_every_pinned_file_can_be_imported() -> None:
    """fetch --import knows every sha256 the pins name (ipvsadm files, toolchains, module zips)."""
    pins = config.load(env={**ENV, "KUBE_ROUTER_SCTP_CONFIG": "/nonexistent"}).pins
    known = pins.pinned_files()
    assert (
        known["1a0a5e25b5a1226435d2fb76341656f83a710183aebb0d204db39c0ec3bedfdb"] == "ipvsadm 1.31 ipvsadm-1.31.tar.xz"
    )
    assert known["a52b4791e55e57173e80e3b04909d2125c46302502b535d8b3b1e83c48cdf3ef"] == "go 1.22.3 linux-amd64"
    assert known["ea3068395503d3c7ef8ce16a286f75c8c93882c25a66c2aa6c8e2ad4da7a9ae0"] == "golang.org/x/text@v0.3.0"


def test_a_line_naming_an_unpinned_toolchain_is_refused_at_load(tmp_path: Path) -> None:
    text = (
        '[[kube-router.lines]]\nname = "next"\nversions = ">=0.3.0, <9.0.0"\nlayout = "modules"\n'
        'version-package = "github.com/cloudnativelabs/kube-router/v2/pkg/version"\n'
        'version-vars = ["Version", "BuildDate"]\ngobgp = { package = "github.com/osrg/gobgp/v4/cmd/gobgp", '
        'version = "go.mod" }\ngo = { debian = "toolchain:1.99.0" }\n'
    )
    code, out, err = cli(tmp_path, "render", text=text)
    assert code == 2 and out == ""
    line = one_line(err)
    assert "kube-router.lines[0].go.debian: Go toolchain 1.99.0 has no pinned sha256" in line
    assert '[go.toolchains."1.99.0"]' in line
