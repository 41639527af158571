"""One resolved configuration: defaults < pins < user config < environment < flags.

The options and their defaults are declared once, in options.py; the pinned data comes
from ``resources/defaults.toml`` and ``ipvsadm/ipvsadm.hash`` (pins.py). A user config
file may set any option and add or replace pins; ``KUBE_ROUTER_SCTP_*`` variables and
flags set options. Every layer goes into one tree that remembers who set each value;
the whole tree is checked once against the schema, so a wrong type or an unknown key is
one line naming the key, the layer and what was expected. The rest of the code receives
typed, checked :class:`Settings`.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from . import aptsources, ipvsadm, pins, redact, schema, validate
from .errors import ConfigError
from .options import ATTRS, ENV_NAMES, ENV_PREFIX, HOST, OPTIONS, OTHER_ENV, SECTIONS, Mirrors, Settings, show
from .pins import FAMILIES

__all__ = ["FAMILIES", "Mirrors", "Settings", "load", "rows", "user_config_path"]
DEFAULTS_FILE = "defaults.toml"


def defaults_text() -> str:
    return resources.files("kube_router_sctp").joinpath("resources/defaults.toml").read_text()


def user_config_path(env: Mapping[str, str] = os.environ) -> Path:
    explicit = env.get(ENV_PREFIX + "CONFIG")
    if explicit:
        return Path(validate.local_path(explicit, ENV_PREFIX + "CONFIG"))
    home = env.get("HOME") or str(Path.home())
    base = env.get("XDG_CONFIG_HOME") or f"{home}/.config"
    return Path(base) / "kube-router-sctp" / "config.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})", "save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", "fix its permissions or the path") from exc
    return _parse_toml(text, str(path))


MAX_NESTING = 16  # tables and arrays in tables: the deepest real key (a release line's gobgp) is 4


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    """A TOML file as data: parse errors, numbers too long for int() and nesting deeper
    than any configuration needs are one line (tomllib and the layer merge recurse)."""
    try:
        data = tomllib.loads(text)
    except RecursionError as exc:
        raise _too_deep(origin) from exc
    except ValueError as exc:  # TOMLDecodeError, or int() of 4,300+ digits
        raise ConfigError(f"{origin} is not valid TOML ({exc})", "fix the file") from exc
    todo: list[tuple[object, int]] = [(data, 1)]
    while todo:  # a loop, not recursion: the check must not fail the way it guards against
        node, depth = todo.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_NESTING:
                    raise _too_deep(origin)
                todo.append((child, depth + 1))
    return data


def _too_deep(origin: str) -> ConfigError:
    return ConfigError(
        f"{origin} nests tables or arrays more than {MAX_NESTING} levels deep", "no option or pin nests so deep"
    )


def _options_tree(values: Mapping[str, object]) -> dict[str, Any]:
    """``{"build.push": x}`` -> ``{"build": {"push": x}}``; ``labels`` is a section of its own."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        if key == "labels":
            tree["labels"] = value
            continue
        section, name = key.split(".", 1)
        tree.setdefault(section, {})[name] = value
    return tree


def _check_env(env: Mapping[str, str]) -> None:
    for name in env:
        if name.startswith(ENV_PREFIX) and name not in ENV_NAMES and name not in OTHER_ENV:
            near = schema.suggest(name, [*ENV_NAMES, *OTHER_ENV])
            raise ConfigError(
                f"unknown environment variable {name}",
                near or f"unset it; known: {', '.join(sorted(n for n in ENV_NAMES if n.startswith(ENV_PREFIX)))}",
            )


def _layers(flags: Mapping[str, object], env: Mapping[str, str], user_config: Path) -> schema.Layers:
    layers = schema.Layers()
    defaults = {key: opt.default for key, opt in OPTIONS.items()}
    layers.add(_options_tree(defaults), schema.DEFAULTS)
    layers.add(_parse_toml(defaults_text(), DEFAULTS_FILE), DEFAULTS_FILE)
    layers.add(ipvsadm.hash_layer(), "ipvsadm/ipvsadm.hash")
    if user_config.is_file():
        layers.add(_read_toml(user_config), str(user_config))
    elif user_config.exists():
        raise ConfigError(
            f"the user config {user_config} is not a file", "point KUBE_ROUTER_SCTP_CONFIG at a TOML file"
        )
    _check_env(env)
    for name, key in ENV_NAMES.items():
        if name in env:
            value = OPTIONS[key].kind.from_text(env[name], name)
            layers.add(_options_tree({key: value}), name)
    for key, value in flags.items():
        opt = OPTIONS.get(key)
        if opt is None:
            raise ConfigError(f"internal: unknown flag key {key}", "report this as a bug")
        if value is not None:
            layers.add(_options_tree({key: value}), opt.flag_name or "flag")
    return layers


def _check_sections(layers: schema.Layers) -> None:
    known = [*SECTIONS, *pins.SECTIONS]
    for section in layers.tree:
        if section not in known:
            at = layers.at(section)
            raise ConfigError(
                f"unknown section [{section}] (set by {schema.by_origin(at.origin)})",
                schema.suggest(section, known) or f"known sections: {', '.join(known)}",
            )
    for section in SECTIONS:
        body = layers.tree.get(section)
        if section == "labels":
            continue
        at = layers.at(section)
        if not isinstance(body, Mapping):
            raise at.wrong_type(body, "a table", f"write it as a table: [{section}]")
        for name in body:
            if f"{section}.{name}" not in OPTIONS:
                near = schema.suggest(f"{section}.{name}", OPTIONS)
                raise ConfigError(
                    f"unknown option {section}.{name} (set by {schema.by_origin(at.child(name).origin)})",
                    near or f"known options: {', '.join(OPTIONS)}",
                )


def _option_values(layers: schema.Layers) -> dict[str, Any]:
    values = {}
    for key, opt in OPTIONS.items():
        path = ("labels",) if key == "labels" else tuple(key.split(".", 1))
        node: Any = layers.tree
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        values[key] = opt.kind.check(node, layers.at(*path))
    return values


def _host(values: dict[str, Any], origins: dict[str, str], env: Mapping[str, str]) -> None:
    """Fill what no layer set from the host: its Debian mirror, its Go proxy, the cache."""
    from .cache import default_root

    found: list[tuple[str, str | None, str]] = []
    if values["mirrors.debian"] is None:
        found.append(("mirrors.debian", host_debian_mirror(), HOST + "apt sources"))
    if values["mirrors.go-proxy"] is None:
        proxy, where = host_go_proxy(env)
        found.append(("mirrors.go-proxy", proxy, HOST + where))
    for key, value, origin in found:
        if value:
            scratch = schema.Layers()
            scratch.add(_options_tree({key: value}), origin)
            values[key] = OPTIONS[key].kind.check(value, scratch.at(*key.split(".", 1)))
            origins[key] = origin
    if values["paths.cache-dir"] is None:
        cache = env.get("XDG_CACHE_HOME")
        values["paths.cache-dir"] = Path(cache) / "kube-router-sctp" if cache else default_root()


def _cross_checks(values: Mapping[str, Any], layers: schema.Layers) -> None:
    if values["smoke.kernel"] and values["smoke.host"]:
        kernel, host = layers.at("smoke", "kernel"), layers.at("smoke", "host")
        raise ConfigError(
            f"--kernel ({schema.by_origin(kernel.origin)}) and --smoke-host ({schema.by_origin(host.origin)}) "
            "both name where to smoke-test",
            "choose one of them",
        )


def load(
    flags: Mapping[str, object] | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    user_config: Path | None = None,
) -> Settings:
    """Resolve and validate the configuration. ``flags`` maps option keys to flag values
    (TOML-typed: strings, booleans, lists; ``labels`` a table)."""
    path = user_config or user_config_path(env)
    layers = _layers(flags or {}, env, path)
    _check_sections(layers)
    values = _option_values(layers)
    origins = {key: layers.origin(("labels",) if key == "labels" else tuple(key.split(".", 1))) for key in OPTIONS}
    _host(values, origins, env)
    _cross_checks(values, layers)
    checked_pins = pins.check(layers)
    mirrors = Mirrors(
        ipvsadm=values["mirrors.ipvsadm"],
        debian=values["mirrors.debian"],
        go_proxy=values["mirrors.go-proxy"],
        ca_bundle=values["mirrors.ca-bundle"],
    )
    kwargs = {ATTRS[key][0]: value for key, value in values.items() if len(ATTRS[key]) == 1}
    settings = Settings(pins=checked_pins, sources=origins, mirrors=mirrors, **kwargs)
    redact.register_values(settings)  # once: every line, report and file hides them from now on
    return settings


def rows(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, value, the layer that set it) for every option: the `config` listing."""
    return [(key, show(settings, key), settings.sources.get(key, schema.DEFAULTS)) for key in OPTIONS]


def host_debian_mirror(apt_dir: Path = aptsources.APT_DIR) -> str | None:
    """The first Debian archive URL in the host's apt sources (deb822 or one-line format)."""
    mirror = aptsources.debian_mirror(apt_dir)
    return mirror if mirror and mirror.startswith(("http://", "https://")) else None


# Where distributions keep the system trust store (Debian/Ubuntu, Fedora/RHEL, Alpine/macOS).
_TRUST_STORES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def host_ca_bundle() -> Path | None:
    """The host's system trust store: what builder stages use for HTTPS when the user named
    no CA bundle (a site's own CA is usually in it already)."""
    for candidate in (ssl.get_default_verify_paths().cafile, *_TRUST_STORES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def host_go_proxy(env: Mapping[str, str] = os.environ) -> tuple[str | None, str]:
    """GOPROXY from the environment, else from ``go env`` when Go is installed; and where from.

    Go is asked in a scratch directory that it takes for its config directory and working
    directory, with the user's own ``go env`` file named explicitly and telemetry off: it
    then reads what it would read, writes no counters (not to ~/.config/go, nor anywhere),
    and no go.mod or go.work where the tool runs can make it fetch a toolchain."""
    if env.get("GOPROXY"):
        return env["GOPROXY"], "GOPROXY"
    go = shutil.which("go", path=env.get("PATH"))
    if not go:
        return None, "go env GOPROXY"
    home = env.get("HOME") or str(Path.home())
    goenv = env.get("GOENV") or f"{env.get('XDG_CONFIG_HOME') or home + '/.config'}/go/env"
    try:
        with tempfile.TemporaryDirectory(prefix="kube-router-sctp-go-") as scratch:
            # Telemetry off in the scratch config: else go starts a child that writes its
            # counters there after go has exited, and the scratch outlives its removal.
            mode = Path(scratch) / "go" / "telemetry" / "mode"
            mode.parent.mkdir(parents=True)
            mode.write_text("off\n")
            run_env = {
                **env,
                "HOME": scratch,
                "XDG_CONFIG_HOME": scratch,
                "XDG_CACHE_HOME": scratch,
                "GOENV": goenv,
                "GOTOOLCHAIN": "local",
                "GOFLAGS": "",
            }
            out = subprocess.run(
                [go, "env", "GOPROXY"], capture_output=True, text=True, timeout=20, env=run_env, cwd=scratch
            )
    except (OSError, subprocess.TimeoutExpired):
        return None, "go env GOPROXY"
    return out.stdout.strip() or None, "go env GOPROXY"
