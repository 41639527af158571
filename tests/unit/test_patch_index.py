"""The patch index: semver ranges select one series; bad indexes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import semver

from kube_router_sctp import config, patch
from kube_router_sctp.errors import ConfigError, PatchError


def test_field_report_release_gets_the_v0_3_series() -> None:
    series = patch.select(patch.load_index(), "v0.3.2")
    assert series.name == "v0.3"
    assert not series.native


@pytest.mark.parametrize("version", ["v2.8.0", "v2.8.1", "v2.11.1", "v3.0.0"])
def test_releases_with_upstream_sctp_are_native(version: str) -> None:
    series = patch.select(patch.load_index(), version)
    assert series.native
    assert series.patches() == []


def test_unknown_release_lists_the_supported_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        patch.select(patch.load_index(), "v0.2.5")
    assert caught.value.one_line().startswith("kube-router v0.2.5 is not supported — supported release lines: v0.3 (")


def test_every_pinned_release_maps_to_exactly_one_series() -> None:
    index = patch.load_index()
    for version in config.load().pins.releases:
        series = patch.select(index, version)  # raises on none or several
        assert series.native == (semver.Version.parse(version[1:]) >= semver.Version(2, 8, 0)), version


def write_index(tmp_path: Path, body: str) -> Path:
    root = tmp_path / "kube-router"
    root.mkdir()
    (root / "series.toml").write_text(body)
    return root


@pytest.mark.parametrize("name", ["../../etc", "..", "/abs", "a/b", ".hidden"])
def test_index_pointing_outside_patches_is_refused(tmp_path: Path, name: str) -> None:
    root = write_index(tmp_path, f'[[series]]\nname = "{name}"\nversions = ">=0.3.0"\n')
    with pytest.raises(PatchError, match="does not name a directory inside patches/kube-router"):
        patch.load_index(root)


def test_symlinked_series_directory_outside_is_refused(tmp_path: Path) -> None:
    root = write_index(tmp_path, '[[series]]\nname = "sneaky"\nversions = ">=0.3.0"\n')
    (tmp_path / "elsewhere").mkdir()
    (root / "sneaky").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PatchError, match="has no directory .* inside patches/kube-router"):
        patch.load_index(root)


def test_overlapping_ranges_are_an_error(tmp_path: Path) -> None:
    root = write_index(
        tmp_path,
        '[[series]]\nname = "a"\nversions = ">=0.3.0"\n[[series]]\nname = "b"\nversions = ">=0.3.1, <0.4.0"\n',
    )
    (root / "a").mkdir()
    (root / "b").mkdir()
    with pytest.raises(PatchError, match="matches several series: a, b"):
        patch.select(patch.load_index(root), "v0.3.2")


@pytest.mark.parametrize("revision", ["0", "-1", "2.9", "true", '"3"', '"x; id"', "1" * 40])
def test_a_revision_that_is_no_whole_number_is_refused(tmp_path: Path, revision: str) -> None:
    """2.9 read as 2 would push over the published sctp.2 tag; a string or a bool is no revision."""
    root = write_index(tmp_path, f'[[series]]\nname = "a"\nversions = ">=0.3.0"\nrevision = {revision}\n')
    (root / "a").mkdir()
    with pytest.raises(PatchError, match="series a: revision .* is not a whole number from 1"):
        patch.load_index(root)


@pytest.mark.parametrize("body", ["series = 1\n", 'series = ["v0.3"]\n'])
def test_series_that_are_not_tables_are_refused(tmp_path: Path, body: str) -> None:
    with pytest.raises(PatchError, match="series must be \\[\\[series\\]\\] tables"):
        patch.load_index(write_index(tmp_path, body))


def test_bad_range_is_an_error(tmp_path: Path) -> None:
    root = write_index(tmp_path, '[[series]]\nname = "a"\nversions = "~>0.3"\n')
    (root / "a").mkdir()
    with pytest.raises(PatchError, match="bad version range"):
        patch.load_index(root)


def test_every_patch_has_dep3_headers() -> None:
    for series in patch.load_index():
        for item in series.patches():
            fields = patch.dep3_fields(item)
            for key in patch.DEP3_REQUIRED:
                assert fields.get(key), f"{item} lacks the DEP-3 field {key}"
            assert "Forwarded" in fields or "Upstream" in fields or "Bug" in fields, f"{item} lacks Forwarded"
            assert fields["Origin"].startswith("vendor"), item
