"""README.md holds the two commands; CI runs the test one; documented links exist."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
README = (PROJECT / "README.md").read_text()


def code_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, re.S)


def test_readme_has_the_main_job_and_the_test_command() -> None:
    blocks = code_blocks()
    assert any("build.py" in b and "--push 127.0.0.1:5000" in b and "--base-family debian" in b for b in blocks)
    assert any(b.strip().endswith("-m pytest") for b in blocks)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = next(b for b in code_blocks() if b.strip().endswith("-m pytest")).split("&&")[-1].strip()
    ci = (PROJECT / ".ci" / "run").read_text()
    assert test_command in ci


def test_readme_links_exist() -> None:
    for target in re.findall(r"\]\(((?:docs|src|patches|images)/[^)#]+)\)", README):
        assert (PROJECT / target).exists(), target


def test_readme_names_every_subcommand() -> None:
    from click.testing import CliRunner

    from kube_router_sctp.cli import main

    help_text = CliRunner().invoke(main, ["--help"]).stdout
    commands = re.findall(r"^  ([a-z-]+)\s", help_text.split("Commands:")[1], re.M)
    for command in commands:
        assert f"`{command}" in README, command
