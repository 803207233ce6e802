"""Metadata files: stemdaq's own format and the pynxtools-em ELN convention (``eln_data.yaml``).

A metadata file (``acquire --metadata``, the site file ``site_metadata``) is read into
*config changes*: ``{"metadata": {...}, "calibration": {...}}`` holding only what the file
gives, validated and normalised (dates as NX_DATE_TIME, atom types as a list), ready to merge
(site < per-acquisition file < flags/REST). Errors are one line per field, no URLs.

Two formats, told apart by their top-level keys:

- stemdaq's: the fields of :class:`~stemdaq.config.UserMetadata` (``title``, ``users``,
  ``sample``, ``microscope``, ...) plus an optional ``calibration`` section.
- pynxtools-em's ELN (NOMAD's ``eln_data.yaml``, pynxtools-em v0.4: ``parsers/oasis_eln.py``,
  ``configurations/oasis_eln_cfg.py``): ``entry`` (experiment_alias, experiment_description,
  start_time, end_time), ``project`` (name), ``sample`` (name, atom_types as "Si, O",
  chemical_formula, preparation_date, thickness {value, unit}, description, is_simulation) and
  ``user`` (a list of people: name, affiliation, address, email, orcid, telephone_number, role).
  The microscope is not in pynxtools-em's generic ELN; its deployment-specific ELN
  (``examples/ger_berlin_koch_cfg.py``) adds ``instrument`` (name, location, vendor, model,
  serial_number), ``ebeam_column`` and ``electron_source`` (emitter_type, voltage {value,
  unit}); stemdaq reads and writes those, plus ``scan_controller`` (dwell_time) and ``detector``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from stemdaq.config import (
    ELEMENTS,
    USER_KEYS,
    Calibration,
    UserMetadata,
    format_validation_error,
)
from stemdaq.errors import ConfigError
from stemdaq.models import DetectorInfo

logger = logging.getLogger(__name__)

#: name ending of an ELN file (what pynxtools-em's reader routes to its ELN parser)
ELN_SUFFIX = ".eln_data.yaml"
#: top-level keys only the ELN convention has
ELN_KEYS = frozenset(
    {"entry", "user", "instrument", "ebeam_column", "electron_source", "scan_controller"}
    | {"detector", "parser"}
)
#: top-level keys only stemdaq's format has
STEMDAQ_KEYS = (frozenset(UserMetadata.model_fields) - {"sample", "project"}) | {"calibration"}
#: what stemdaq takes from an ELN ``sample`` section (the rest is ignored, with a warning)
_ELN_SAMPLE = frozenset(
    {"name", "atom_types", "chemical_formula", "preparation_date", "thickness", "description"}
    | {"is_simulation"}
)

_LENGTH = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micrometer": 1e-6}
_LENGTH |= {"micron": 1e-6, "nm": 1e-9, "nanometer": 1e-9, "angstrom": 1e-10, "å": 1e-10}
_LENGTH |= {"pm": 1e-12, "meter": 1.0, "metre": 1.0, "millimeter": 1e-3}
_TIME = {"s": 1.0, "second": 1.0, "ms": 1e-3, "millisecond": 1e-3, "us": 1e-6, "µs": 1e-6}
_TIME |= {"μs": 1e-6, "microsecond": 1e-6, "ns": 1e-9, "nanosecond": 1e-9}
_VOLTAGE = {"v": 1.0, "volt": 1.0, "kv": 1e3, "kilovolt": 1e3, "megavolt": 1e6}
#: stemdaq field -> ELN key, to name an error in the file's own words
_ELN_NAMES = {
    "title": "entry.experiment_alias",
    "experiment_identifier": "entry.identifier_experiment",
    "experiment_description": "entry.experiment_description",
    "project": "project.name",
    "users": "user",
    "microscope.emitter_type": "electron_source.emitter_type",
    "microscope": "instrument",
    "dwell_time": "scan_controller.dwell_time",
    "calibration.beam_energy": "electron_source.voltage",
}

Format = Literal["stemdaq", "eln"]


def detect_format(data: dict[str, Any]) -> Format:
    """``"eln"`` for the pynxtools-em ELN convention, else ``"stemdaq"``.

    Raises
    ------
    ConfigError
        The file mixes keys of both.
    """
    eln = sorted(set(data) & ELN_KEYS)
    own = sorted(set(data) & STEMDAQ_KEYS)
    sample = data.get("sample")
    if isinstance(sample, dict) and {"is_simulation", "chemical_formula"} & set(sample):
        eln = eln or ["sample.is_simulation/chemical_formula"]
    if eln and own:
        raise ConfigError(
            f"mixes the pynxtools-em ELN ({', '.join(eln)}) and stemdaq's format "
            f"({', '.join(own)}); use one"
        )
    return "eln" if eln else "stemdaq"


def quantity(value: Any, units: dict[str, float], default: str, what: str) -> Any:
    """``{value, unit}``, ``"20 nm"`` or a number (in ``default``) -> SI; None stays None."""
    if value is None or isinstance(value, bool):
        return value
    unit = default
    if isinstance(value, dict):
        value, unit = value.get("value"), str(value.get("unit") or default)
    elif isinstance(value, str) and " " in value.strip():
        value, unit = value.strip().split(None, 1)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a number with a unit, got {value!r}") from None
    scale = units.get(unit.strip()) or units.get(unit.strip().lower())
    if scale is None:
        raise ConfigError(f"{what}: unknown unit {unit!r} (known: {', '.join(units)})")
    return number * scale


def formula_elements(formula: str) -> list[str]:
    """The element symbols in a chemical formula (``"InGaN"`` -> ``["In", "Ga", "N"]``)."""
    symbols = [s for s in re.findall(r"[A-Z][a-z]?", formula) if s in ELEMENTS]
    return list(dict.fromkeys(symbols))


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def from_eln(data: dict[str, Any]) -> dict[str, Any]:
    """A pynxtools-em ``eln_data.yaml`` -> stemdaq config changes (not yet validated).

    ``entry.start_time``/``end_time`` are ignored (stemdaq records its own), as are
    ``sample.is_simulation`` (known from the detector) and ``detector`` (from the stream);
    keys stemdaq has no place for are left out with a warning, as pynxtools-em does.
    """
    entry, sample = _section(data, "entry"), _section(data, "sample")
    inst, column = _section(data, "instrument"), _section(data, "ebeam_column")
    source, scan = _section(data, "electron_source"), _section(data, "scan_controller")
    project = data.get("project")
    ignored = [k for k in data if k not in ELN_KEYS | {"project", "sample"}]
    ignored += [f"sample.{k}" for k in sample if k not in _ELN_SAMPLE]
    md: dict[str, Any] = {
        "title": entry.get("experiment_alias"),
        "experiment_identifier": entry.get("identifier_experiment"),
        "experiment_description": entry.get("experiment_description"),
        "project": project.get("name") if isinstance(project, dict) else project,
        "dwell_time": quantity(scan.get("dwell_time"), _TIME, "s", "scan_controller.dwell_time"),
    }
    smp = {k: sample.get(k) for k in ("name", "atom_types", "preparation_date", "description")}
    formula = sample.get("chemical_formula")
    if formula and not smp["atom_types"]:
        smp["atom_types"] = formula_elements(str(formula))
    smp["thickness"] = quantity(sample.get("thickness"), _LENGTH, "m", "sample.thickness")
    md["sample"] = smp
    people = data.get("user")
    if isinstance(people, list):
        for i, person in enumerate(people):
            if isinstance(person, dict):
                ignored += [f"user.{i}.{k}" for k in person if k not in USER_KEYS]
        people = [
            {k: v for k, v in p.items() if k in USER_KEYS} if isinstance(p, dict) else p
            for p in people
            if p  # NOMAD writes {} for an empty repeat
        ]
    md["users"] = people or None
    md["microscope"] = {
        key: inst.get(key) or column.get(key)
        for key in ("name", "location", "vendor", "model", "serial_number")
    } | {"emitter_type": source.get("emitter_type")}
    voltage = quantity(source.get("voltage"), _VOLTAGE, "V", "electron_source.voltage")
    if ignored:
        logger.warning("ELN keys stemdaq does not use: %s", ", ".join(ignored))
    changes: dict[str, Any] = {"metadata": _drop_none(md)}
    if voltage is not None:
        changes["calibration"] = {"beam_energy": voltage}  # eV = volts x e, for electrons
    return changes


def to_eln(
    metadata: UserMetadata,
    *,
    beam_energy: float | None = None,
    is_simulation: bool | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
    detector: DetectorInfo | None = None,
) -> dict[str, Any]:
    """stemdaq's metadata -> a pynxtools-em ``eln_data.yaml`` document (what :func:`from_eln`
    reads back into the same :class:`~stemdaq.config.UserMetadata`)."""
    md, s, m = metadata, metadata.sample, metadata.microscope

    def q(value: float | None, unit: str) -> dict[str, Any] | None:
        return None if value is None else {"value": value, "unit": unit}

    doc: dict[str, Any] = {
        "entry": {
            "experiment_alias": md.title,
            "identifier_experiment": md.experiment_identifier,
            "experiment_description": md.experiment_description,
            "start_time": start_time,
            "end_time": end_time,
        },
        "project": {"name": md.project},
        "sample": {
            "name": s.name,
            "is_simulation": is_simulation,
            "atom_types": ", ".join(s.atom_types) if s.atom_types else None,
            "preparation_date": s.preparation_date,
            "thickness": q(s.thickness, "m"),
            "description": s.description,
        },
        "user": [{k: p[k] for k in USER_KEYS if p.get(k)} for p in md.users or []],
        "instrument": {k: getattr(m, k) for k in ("name", "location", "vendor", "model")}
        | {"serial_number": m.serial_number},
        "electron_source": {"emitter_type": m.emitter_type, "voltage": q(beam_energy, "V")},
        "scan_controller": {"dwell_time": q(md.dwell_time, "s")},
    }
    if detector is not None:
        doc["detector"] = [
            {
                "name": detector.description,
                "vendor": "DECTRIS"
                if (detector.description or "").lower().startswith("dectris")
                else None,
                "model": detector.description,
                "serial_number": detector.serial_number,
                "firmware_version": detector.software_version,
                "sensor_material": detector.sensor_material,
                "sensor_thickness": q(detector.sensor_thickness, "m"),
                "x_pixel_size": q(detector.pixel_size_x, "m"),
                "y_pixel_size": q(detector.pixel_size_y, "m"),
            }
        ]
    return _drop_none(doc)


def _drop_none(value: Any) -> Any:
    """Without None values and the mappings and lists left empty."""
    if isinstance(value, dict):
        out = {k: _drop_none(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        items = [_drop_none(v) for v in value]
        return [v for v in items if v is not None and v != {}]
    return value


def config_changes(data: Any, *, where: str = "metadata") -> dict[str, Any]:
    """A metadata document (either format) -> validated config changes, only the keys given.

    Raises
    ------
    ConfigError
        One line: ``<where>: sample.atom_types: 'Xx' is not a chemical element symbol; ...``.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of metadata, got {type(data).__name__}")
    try:
        kind = detect_format(data)
        if kind == "eln":
            raw = from_eln(data)
        else:
            raw = {"metadata": {k: v for k, v in data.items() if k != "calibration"}}
            if data.get("calibration") is not None:
                raw["calibration"] = data["calibration"]
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    changes: dict[str, Any] = {}
    for key, model in (("metadata", UserMetadata), ("calibration", Calibration)):
        if key not in raw:
            continue
        try:
            changes[key] = model.model_validate(raw[key]).model_dump(exclude_unset=True)
        except ValidationError as exc:
            lines = format_validation_error(exc).removeprefix("invalid settings: ").split("; ")
            prefix = "" if key == "metadata" else f"{key}."
            lines = [prefix + line for line in lines]
            if kind == "eln":
                lines = [_in_eln_words(line) for line in lines]
            raise ConfigError(f"{where}: {'; '.join(lines)}") from None
    return changes


def _in_eln_words(line: str) -> str:
    """An error line's location renamed from stemdaq's field to the ELN file's key."""
    loc, sep, rest = line.partition(": ")
    for ours, theirs in sorted(_ELN_NAMES.items(), key=lambda kv: -len(kv[0])):
        if loc == ours or loc.startswith(ours + "."):
            return theirs + loc[len(ours) :] + sep + rest
    return line


def read_document(path: Path) -> Any:
    """The YAML (or JSON) document in ``path``.

    Raises
    ------
    ConfigError
        The file cannot be read or parsed (one line).
    """
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read metadata file {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"metadata file {path}: not YAML/JSON{at}: {problem}") from None


def load_metadata_file(path: Path) -> dict[str, Any]:
    """Config changes from a metadata file in either format (see the module docstring).

    Raises
    ------
    ConfigError
        One line naming the file and each invalid field.
    """
    return config_changes(read_document(path), where=f"metadata file {path}")


__all__ = [
    "ELN_SUFFIX",
    "config_changes",
    "detect_format",
    "formula_elements",
    "from_eln",
    "load_metadata_file",
    "quantity",
    "read_document",
    "to_eln",
]
