"""One vocabulary: the CLI flags of every acquisition setting, generated from the settings model.

Each field of :class:`~stemdaq.config.AcquisitionConfig` (and of its ``calibration``) is a flag
named after it: ``end_timeout`` <-> ``--end-timeout`` <-> REST/YAML ``end_timeout`` <-> env
``STEMDAQ_ACQUISITION__END_TIMEOUT``; calibration fields drop their prefix
(``calibration.camera_length`` <-> ``--camera-length``). ``acquire`` and ``start`` take the same
flags (:func:`acquisition_options`), so they accept the same settings. A flag not given is not a
change: ``acquire`` then uses the model's default, ``start`` the server's current config.
A few short names stay as aliases (``--scan`` for ``--scan-shape``, ``--step``, ``--unit``,
``--detector``, ``--stream``, ``--timeout``, ``--simulation``).
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from stemdaq.config import AcquisitionConfig, Calibration
from stemdaq.config import deep_merge as deep_merge  # re-exported for the commands

#: fields set otherwise than by a flag of their own name (``metadata``: ``--metadata FILE`` and
#: ``--set metadata.a.b=v``; ``file_template``: ``acquire`` names its file with ``--out``)
NOT_FLAGS = frozenset({"metadata", "calibration"})
#: short names kept for the flags people already type
ALIASES: dict[str, tuple[str, ...]] = {
    "detector_url": ("--detector",),
    "stream_endpoint": ("--stream",),
    "scan_shape": ("--scan",),
    "scan_step": ("--step",),
    "scan_unit": ("--unit",),
    "start_timeout": ("--timeout",),
    "is_simulation": ("--simulation",),
}
_PANEL = "Acquisition settings (one name everywhere: flag, REST, YAML, env)"

#: ``--set key=JSON`` (dotted keys for nested settings), the same for every command
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any setting as key=JSON, dotted for nested keys, e.g. metadata.sample.name=Si",
    ),
]
#: ``--metadata FILE``
MetadataOption = Annotated[
    Path | None,
    typer.Option(help="YAML/JSON file with user metadata (sample, microscope, ...)"),
]


@dataclass(frozen=True)
class Flag:
    """One setting as a CLI flag."""

    path: tuple[str, ...]  # ("end_timeout",) or ("calibration", "camera_length")
    name: str  # the Python parameter name
    flag: str  # "--end-timeout"
    annotation: Any  # the Annotated type typer sees

    @property
    def key(self) -> str:
        """The dotted settings key, e.g. ``calibration.camera_length``."""
        return ".".join(self.path)


def _is_pair(info: FieldInfo) -> bool:
    return typing.get_origin(_unoptional(info.annotation)) is tuple


def _unoptional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return args[0] if len(args) == 1 else tp
    return tp


def _flag_for(path: tuple[str, ...], info: FieldInfo) -> Flag:
    field = path[-1]
    flag = "--" + field.replace("_", "-")
    names = (flag, *ALIASES.get(field, ()))
    base = _unoptional(info.annotation)
    help_text = (info.description or "").replace("[", "\\[")
    if base is bool:
        names = (f"{flag}/--no-{flag[2:]}", *ALIASES.get(field, ()))
        typ: Any = bool | None
    elif _is_pair(info):
        typ = str | None
        help_text += " (NxM, N,M, or one value for both)"
    elif typing.get_origin(base) is typing.Literal:
        typ = str | None
        help_text += " (one of: " + ", ".join(map(str, typing.get_args(base))) + ")"
    elif base in (int, float):
        typ = base | None
    else:
        typ = str | None
    option = typer.Option(*names, help=help_text, rich_help_panel=_PANEL, show_default=False)
    return Flag(path, "_".join(path), flag, Annotated[typ, option])


def _flags() -> list[Flag]:
    flags = []
    for name, info in AcquisitionConfig.model_fields.items():
        if name not in NOT_FLAGS:
            flags.append(_flag_for((name,), info))
    for name, info in Calibration.model_fields.items():
        flags.append(_flag_for(("calibration", name), info))
    return flags


FLAGS: list[Flag] = _flags()


def acquisition_options(
    exclude: frozenset[str] = frozenset(),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add every acquisition setting's flag to a command; it receives them as ``settings``
    (a nested dict of the flags given, ready to merge into a config)."""
    flags = [f for f in FLAGS if f.key not in exclude]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "settings"]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            given = {f.path: kwargs.pop(f.name) for f in flags}
            return func(**kwargs, settings=to_settings(given))

        extra = [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=f.annotation
            )
            for f in flags
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def to_settings(given: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """``{("calibration", "camera_length"): 0.1, ("end_timeout",): None}`` -> nested dict of the
    values given (None: not given)."""
    out: dict[str, Any] = {}
    for path, value in given.items():
        if value is None:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set a.b.c=value`` (value as JSON if it parses, else as text) -> a nested dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise typer.BadParameter(f"{key!r} sets inside a value", param_hint="--set")
            node = nxt
        node[parts[-1]] = value
    return out
