"""Maintainers' entry: ``python -m kube_router_sctp.controlplane pin VERSION [--go 1.26.2]``
writes a new control-plane pin (build.toml, go.mod, go.sum) into the package's resources;
``... build`` builds (or finds in the cache) the pinned binaries and prints them."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from .. import config
from ..errors import PipelineError
from . import build


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command("pin")
@click.argument("version")
@click.option("--go", help="Go toolchain (pinned in [go.toolchains]) to build it with.")
def pin_command(version: str, go: str | None) -> None:
    """Pin k8s.io/kubernetes VERSION (e.g. v1.37.2) for the dataplane proof's control plane."""
    with _handled():
        pinned = build.pin(version, config.load(), go)
    click.echo(f"pinned k8s.io/kubernetes {pinned.kubernetes} (staging {pinned.staging}), Go {pinned.go}")


@main.command("build")
def build_command() -> None:
    """Build the pinned kube-apiserver and kube-controller-manager (or find them cached)."""
    with _handled():
        binaries = build.binaries(config.load())
    for command, path in binaries.paths.items():
        click.echo(f"{command} {binaries.version} {path}")


@contextlib.contextmanager
def _handled() -> Iterator[None]:
    """A PipelineError is one line on stderr and its exit code, as in the main CLI."""
    try:
        yield
    except PipelineError as exc:
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
