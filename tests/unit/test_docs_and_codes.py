"""Exit codes: one meaning each, all in errors.py, documented exactly; generated tables fresh."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from kube_router_sctp import errors, options

PROJECT = Path(__file__).resolve().parents[2]


def generated(doc: str, name: str) -> str:
    text = (PROJECT / "docs" / doc).read_text()
    match = re.search(rf"<!-- BEGIN generated: {name} -->\n(.*?)<!-- END generated: {name} -->", text, re.S)
    assert match, f"docs/{doc} has no generated block {name}"
    return match[1].rstrip("\n")


def test_exit_codes_are_unique() -> None:
    codes = [code for code, _, _ in errors.exit_codes()]
    assert len(codes) == len(set(codes)), codes
    classes = {name: code for code, name, _ in errors.exit_codes()}
    assert classes["VerificationError"] != classes["UnsafeSourceError"]
    assert classes["PatchError"] != classes["PatchCheckFailed"]
    assert classes["DoctorFindings"] != classes["PipelineError"]


def test_every_error_class_with_a_code_lives_in_errors_py() -> None:
    """No module outside errors.py declares an error class or an exit code of its own."""
    for path in (PROJECT / "src" / "kube_router_sctp").rglob("*.py"):
        if path.name == "errors.py":
            continue
        known = {cls.__name__ for cls in errors._classes()}
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
            assert not bases & known, f"{path}: class {node.name} derives from {bases & known}"
            for statement in node.body:
                targets = statement.targets if isinstance(statement, ast.Assign) else []
                assert "exit_code" not in {getattr(t, "id", "") for t in targets}, f"{path}: {node.name}.exit_code"


def test_reliability_md_lists_exactly_the_exit_codes() -> None:
    table = generated("reliability.md", "exit-codes")
    assert table == errors.exit_code_table(), "run scripts/gendocs.py"
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {code for code, _, _ in errors.exit_codes()}
    assert {9, 10, 11, 12, 13} <= documented


def test_configuration_md_options_table_is_fresh() -> None:
    assert generated("configuration.md", "options") == options.markdown_table(), "run scripts/gendocs.py"
    table = generated("configuration.md", "options")
    for key, opt in options.OPTIONS.items():
        assert f"`{key}`" in table or key == "labels"
        if opt.env_name:
            assert f"`{opt.env_name}`" in table
        if opt.flag_name:
            assert f"`{opt.flag_name}" in table


def test_gendocs_check_passes() -> None:
    result = subprocess.run([sys.executable, str(PROJECT / "scripts" / "gendocs.py"), "--check"], capture_output=True)
    assert result.returncode == 0, result.stderr
