#!/usr/bin/env python3
"""Write the generated tables of the docs from the code that declares them:

- docs/configuration.md: the options table, from the options table (options.py);
- docs/reliability.md: the exit-code table, from errors.py.

Each table sits between ``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated: NAME -->``.
``--check`` changes nothing and exits 1 when a table is stale (tests/unit/test_docs.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))

from kube_router_sctp import errors, options  # noqa: E402

TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "options": (PROJECT / "docs" / "configuration.md", options.markdown_table),
    "exit-codes": (PROJECT / "docs" / "reliability.md", errors.exit_code_table),
}


def block(name: str, text: str) -> tuple[int, int]:
    """Where the body of block ``name`` starts and ends in ``text``."""
    begin, end = f"<!-- BEGIN generated: {name} -->\n", f"<!-- END generated: {name} -->"
    start = text.index(begin) + len(begin)
    return start, text.index(end, start)


def updated(name: str) -> tuple[Path, str, str]:
    """(document, its text now, its text with block ``name`` regenerated)."""
    path, make = TABLES[name]
    text = path.read_text()
    start, stop = block(name, text)
    return path, text, text[:start] + make() + "\n" + text[stop:]


@click.command(help=__doc__)
@click.option("--check", is_flag=True, help="Exit 1 if a table is stale; write nothing.")
def main(check: bool) -> None:
    stale = []
    for name in TABLES:
        path, now, wanted = updated(name)
        if now == wanted:
            continue
        stale.append(f"{path.relative_to(PROJECT)} ({name})")
        if not check:
            path.write_text(wanted)
    if stale and check:
        click.echo("stale: " + ", ".join(stale) + " — run scripts/gendocs.py", err=True)
        sys.exit(1)
    for item in stale:
        click.echo(f"wrote {item}")


if __name__ == "__main__":
    main()
