"""File names that come from the API: rendered from a template, never outside the data directory."""

from __future__ import annotations

import os
import string
from datetime import datetime
from pathlib import Path, PurePosixPath

from stemdaq.errors import ConfigError, PathError

#: fields a ``file_template`` may use
TEMPLATE_FIELDS = ("id", "date", "time", "series_id")
_MAX_NAME = 255  # bytes per path component on common file systems


def check_template(template: str) -> None:
    """Reject templates with unknown fields, attribute/index access or bad syntax.

    Raises
    ------
    ConfigError
        With a message naming the offending field.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"file_template {template!r}: {exc}") from None
    for _, field, _, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            allowed = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            raise ConfigError(f"file_template: unknown field {{{field}}}; allowed: {allowed}")
        if conversion is not None:
            raise ConfigError(f"file_template: conversion !{conversion} is not allowed")


def render_template(
    template: str, *, acq_id: str, when: datetime, series_id: int | str | None = None
) -> str:
    """Fill ``{id}``, ``{date}`` (YYYY-MM-DD), ``{time}`` (HHMMSS) and ``{series_id}``.

    ``{series_id}`` is only known once the series starts; before that it renders as ``next``.
    """
    check_template(template)
    values = {
        "id": acq_id,
        "date": when.strftime("%Y-%m-%d"),
        "time": when.strftime("%H%M%S"),
        "series_id": "next" if series_id is None else series_id,
    }
    try:
        return template.format_map(values)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ConfigError(f"file_template {template!r}: {exc}") from None


def resolve_in_data_dir(
    data_dir: Path,
    relative: str | Path,
    *,
    create_parents: bool = True,
    new_file: bool = False,
    reserved: Path | None = None,
) -> Path:
    """The absolute path of ``relative`` under ``data_dir``, refusing anything that escapes it.

    Rejected: absolute paths, ``..`` components, NUL bytes, over-long names, and names whose
    existing parts are symbolic links resolving outside ``data_dir``. Parent directories are
    created (inside ``data_dir`` only) when ``create_parents`` is true.

    With ``new_file`` the name is being reserved for a new file: it is also refused when
    ``<name>`` or ``<name>.partial`` (the name the writer creates first) exists as anything at all,
    dangling symbolic links included (``os.path.lexists``), so that a link planted under either
    name can never make the writer create or replace a file outside ``data_dir``.

    ``reserved`` is a folder no file may be written into (the service's own state: history,
    config), whatever the template says.

    Raises
    ------
    PathError
        When the name would leave the data directory or cannot be a file name, or (``new_file``)
        when the file or its ``.partial`` exists already.
    """
    text = str(relative)
    if not text.strip():
        raise PathError("empty file name")
    if "\x00" in text:
        raise PathError("file name contains a NUL byte")
    if "\\" in text:
        raise PathError(f"{text!r}: backslashes are not allowed in file names")
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("~"):
        raise PathError(f"{text!r}: file names must be relative to the data directory")
    parts = pure.parts
    if any(part == ".." for part in parts):
        raise PathError(f"{text!r}: '..' is not allowed in file names")
    if any(len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME for part in parts):
        raise PathError(f"{text!r}: a path component is longer than {_MAX_NAME} bytes")
    if text.endswith("/") or pure.name in ("", "."):
        raise PathError(f"{text!r}: not a file name")

    root = Path(data_dir).resolve()
    target = root.joinpath(*parts)
    # symlinks anywhere on the way (directories or the file itself) must stay inside root
    resolved = target.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise PathError(f"{text!r} resolves outside the data directory")
    if reserved is not None and resolved.is_relative_to(Path(reserved).resolve()):
        raise PathError(
            f"{text!r} lies in the service's state folder ({reserved}), where its history "
            "is kept; choose a file name outside it"
        )
    if create_parents:
        try:
            os.makedirs(resolved.parent, exist_ok=True)
        except OSError as exc:
            raise PathError(
                f"cannot create directory for {text!r}: {exc.strerror or exc}"
            ) from None
        # a link may have been swapped in while creating: check again
        if not resolved.parent.resolve().is_relative_to(root):
            raise PathError(f"{text!r} resolves outside the data directory")
    if new_file:
        check_new_file(target, text)
        if resolved != target:
            check_new_file(resolved, text)
    return resolved


def partial_path(path: Path) -> Path:
    """The name a file is written under until it is complete: ``<name>.partial``."""
    return path.with_name(path.name + ".partial")


def check_new_file(path: Path, text: str | None = None) -> None:
    """Refuse ``path`` if it or its ``.partial`` exists as anything (links are not followed).

    Raises
    ------
    PathError
        Naming the entry that is in the way.
    """
    label = text if text is not None else path.name
    for candidate in (path, partial_path(path)):
        if os.path.lexists(candidate):
            kind = "a symbolic link" if os.path.islink(candidate) else "an entry"
            which = "" if candidate == path else " (its .partial)"
            raise PathError(
                f"{label!r} exists already in the data directory{which}: {kind} is in the way"
            )
