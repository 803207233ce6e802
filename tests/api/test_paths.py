"""File names from the API never leave the data directory."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from stemdaq.errors import ConfigError, PathError
from stemdaq.paths import render_template, resolve_in_data_dir


def test_relative_name_is_created_inside(tmp_path: Path) -> None:
    path = resolve_in_data_dir(tmp_path, "2026-11-24/run_1.nxs")
    assert path == (tmp_path / "2026-11-24" / "run_1.nxs").resolve()
    assert path.parent.is_dir()


@pytest.mark.parametrize(
    "name",
    [
        "../x.nxs",
        "a/../../x.nxs",
        "/etc/x.nxs",
        "~/x.nxs",
        "a\\..\\x.nxs",
        "x\x00.nxs",
        "",
        "dir/",
        ".",
        "a" * 300,
    ],
)
def test_escaping_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathError):
        resolve_in_data_dir(tmp_path / "data", name)
    assert not (tmp_path / "x.nxs").exists()


def test_symlink_out_of_data_dir_is_rejected(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (data / "link").symlink_to(outside)
    (data / "file_link.nxs").symlink_to(outside / "f.nxs")
    with pytest.raises(PathError, match="outside"):
        resolve_in_data_dir(data, "link/x.nxs")
    with pytest.raises(PathError, match="outside"):
        resolve_in_data_dir(data, "file_link.nxs")
    # a link that stays inside is fine
    (data / "inner").mkdir()
    (data / "inside_link").symlink_to(data / "inner")
    assert resolve_in_data_dir(data, "inside_link/x.nxs") == (data / "inner" / "x.nxs").resolve()


def test_template_fields() -> None:
    when = datetime(2026, 11, 24, 8, 15, 30, tzinfo=UTC)
    assert (
        render_template("{date}/{time}_{id}.nxs", acq_id="A", when=when)
        == "2026-11-24/081530_A.nxs"
    )
    for bad in (
        "{user}.nxs",
        "{id.__class__}.nxs",
        "{id[0]}.nxs",
        "{id!r}.nxs",
        "{.nxs",
        "{0}.nxs",
    ):
        with pytest.raises(ConfigError):
            render_template(bad, acq_id="A", when=when)


def test_new_file_refuses_existing_names_and_dangling_partial_links(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (data / "run.nxs.partial").symlink_to(outside / "run.nxs")  # dangling, points outside
    assert resolve_in_data_dir(data, "run.nxs") == (data / "run.nxs").resolve()  # a lookup
    with pytest.raises(PathError, match="partial"):
        resolve_in_data_dir(data, "run.nxs", new_file=True)
    (data / "inner.nxs").symlink_to(data / "missing.nxs")  # dangling, inside
    with pytest.raises(PathError, match="exists already"):
        resolve_in_data_dir(data, "inner.nxs", new_file=True)
    (data / "taken.nxs.partial").mkdir()  # "exists as anything"
    with pytest.raises(PathError, match="exists already"):
        resolve_in_data_dir(data, "taken.nxs", new_file=True)
    assert (
        resolve_in_data_dir(data, "sub/free.nxs", new_file=True)
        == (data / "sub" / "free.nxs").resolve()
    )
    assert not (outside / "run.nxs").exists()
