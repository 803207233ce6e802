"""User metadata (NXsample, NXuser, NXem_instrument): lenient input, one line per invalid field.

Dates (date or datetime objects, or strings) become NX_DATE_TIME strings; ``atom_types`` takes
``"Si"``, ``"Si, O"`` or a list of element symbols; numbers in text fields become text. Part of
:class:`stemdaq.config.AcquisitionConfig` as its ``metadata``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

#: the user metadata of one acquisition, as JSON, at most (it is echoed in every status and event)
MAX_METADATA_BYTES = 64 << 10
_NAME = 1000  # characters in a name-like metadata field
_TEXT = 16000  # characters in a free-text metadata field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: chemical element symbols, Z = 1..118 (``atom_types`` must be these)
ELEMENTS = frozenset(
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og".split()
)
#: what a person in ``metadata.users`` may have (NXem's NXuser fields; ``orcid`` is written as
#: ``identifier_orcid``); the same keys as the pynxtools-em ELN's ``user`` section
USER_KEYS = ("name", "affiliation", "address", "email", "telephone_number", "role", "orcid")
#: NX_DATE_TIME as pynxtools checks it: ISO 8601 date-time with seconds and a time zone
NX_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d*)?((?!-00:00)[+-]\d{2}:\d{2}|Z)$"
)


def iso_datetime(value: Any) -> Any:
    """A date, datetime or ISO 8601 string -> NX_DATE_TIME text (``2026-11-30T00:00:00+01:00``).

    A date is midnight and a time without zone is local time, both in this machine's time
    zone. ``None`` and text that is NX_DATE_TIME already are returned as they are.
    """
    if value is None or (isinstance(value, str) and NX_DATE_TIME.match(value.strip())):
        return value.strip() if isinstance(value, str) else value
    when: datetime | None = None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            when = None
    if when is None:
        raise PydanticCustomError(
            "date_time",
            "not an ISO 8601 date or date-time (e.g. 2026-11-30 or 2026-11-30T14:00:00+01:00)",
        )
    return (when if when.tzinfo else when.astimezone()).isoformat()


def _split_list(value: Any) -> Any:
    """``"Si"``, ``"Si, O"`` or ``"Si O"`` -> a list of words; a list of such texts too."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return [w for item in value for w in re.split(r"[,;\s]+", item) if w] or None
    return value


class _Metadata(_Model):
    # YAML reads serial_number: 1 and orcid: 0000 as numbers: take them as the text they were
    model_config = ConfigDict(coerce_numbers_to_str=True)


class SampleMetadata(_Metadata):
    """User-supplied sample description (NXsample)."""

    name: str | None = Field(None, max_length=_NAME, description="Sample name")
    atom_types: list[str] | None = Field(
        None,
        max_length=128,
        description="Elements in the sample: ['Si', 'O'], or one text 'Si, O'",
    )
    preparation_date: str | None = Field(
        None,
        max_length=64,
        description="When the sample was prepared: ISO 8601 date or date-time (2026-11-30, "
        "2026-11-30T14:00:00+01:00); stored as a date-time with time zone (NX_DATE_TIME)",
    )
    thickness: float | None = Field(None, gt=0, description="Sample thickness, m")
    description: str | None = Field(None, max_length=_TEXT, description="Free text")

    @field_validator("atom_types", mode="before")
    @classmethod
    def _atom_list(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("atom_types")
    @classmethod
    def _elements(cls, v: list[str] | None) -> list[str] | None:
        for symbol in v or []:
            if symbol not in ELEMENTS:
                fixed = symbol[:1].upper() + symbol[1:].lower()
                hint = f" (did you mean {fixed!r}?)" if fixed in ELEMENTS else ""
                raise PydanticCustomError(
                    "element",
                    "{symbol} is not a chemical element symbol{hint}",
                    {"symbol": repr(symbol), "hint": hint},
                )
        return list(dict.fromkeys(v)) if v else None

    @field_validator("preparation_date", mode="before")
    @classmethod
    def _iso(cls, v: Any) -> Any:
        return iso_datetime(v)


class MicroscopeMetadata(_Metadata):
    """User-supplied microscope description (NXem_instrument)."""

    name: str | None = Field(None, max_length=_NAME, description="Instrument name at the facility")
    vendor: str | None = Field(None, max_length=_NAME, description="Microscope manufacturer")
    model: str | None = Field(None, max_length=_NAME, description="Microscope model")
    serial_number: str | None = Field(
        None, max_length=_NAME, description="Microscope serial number"
    )
    location: str | None = Field(None, max_length=_NAME, description="Facility / room")
    emitter_type: str | None = Field(
        None,
        max_length=_NAME,
        description="Electron source emitter type (NXem requires it), e.g. 'cold field emission'",
    )


class UserMetadata(_Metadata):
    """Everything a user may add to the file; none of it is needed to acquire."""

    title: str | None = Field(
        None,
        max_length=_NAME,
        description="Title of the measurement (NXentry/title and NXem's experiment_alias)",
    )
    experiment_identifier: str | None = Field(
        None, max_length=_NAME, description="Proposal / experiment id"
    )
    experiment_description: str | None = Field(None, max_length=_TEXT, description="Free text")
    project: str | None = Field(None, max_length=_NAME, description="Project name (NXproject)")
    users: list[dict[str, str]] | None = Field(
        None,
        max_length=100,
        description="People: [{'name': ..., 'affiliation': ..., 'orcid': ...}]; keys: "
        + ", ".join(USER_KEYS),
    )
    sample: SampleMetadata = Field(default_factory=SampleMetadata)
    microscope: MicroscopeMetadata = Field(default_factory=MicroscopeMetadata)
    dwell_time: float | None = Field(None, gt=0, description="Scan dwell time per position, s")

    @field_validator("project", mode="before")
    @classmethod
    def _project_name(cls, v: Any) -> Any:
        return v.get("name") if isinstance(v, dict) and set(v) <= {"name"} else v

    @field_validator("users", mode="before")
    @classmethod
    def _people(cls, v: Any) -> Any:
        if isinstance(v, str | dict):  # one person
            v = [v]
        if isinstance(v, list):
            v = [{"name": p} if isinstance(p, str) else p for p in v]
        return v

    @field_validator("users")
    @classmethod
    def _user_keys(cls, v: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
        for i, person in enumerate(v or []):
            unknown = sorted(set(person) - set(USER_KEYS))
            if unknown:
                raise PydanticCustomError(
                    "user_key",
                    "person {i} has an unknown key {keys} (a person has: {known})",
                    {"i": i, "keys": ", ".join(map(repr, unknown)), "known": ", ".join(USER_KEYS)},
                )
        return v

    @model_validator(mode="after")
    def _bounded(self) -> UserMetadata:
        size = len(self.model_dump_json(exclude_none=True))
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are accepted "
                "(it goes into every status, event and history record)"
            )
        return self
