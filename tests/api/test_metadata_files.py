"""Metadata files as users write them: natural YAML, NOMAD's eln_data.yaml, a site file.

The ELN documents below are pynxtools-em's own test data (FAIRmat-NFDI/pynxtools-em v0.4.5,
``tests/data/default/output.nxs_eln_data.yaml`` and
``tests/data/ger_berlin_koch_group/output.custom_eln_data.yaml``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from stemdaq.cli import app
from stemdaq.commands.files import load_metadata, metadata_changes
from stemdaq.config import (
    AcquisitionConfig,
    SampleMetadata,
    UserMetadata,
    merge_config,
)
from stemdaq.eln import config_changes, detect_format, load_metadata_file
from stemdaq.errors import ConfigError
from stemdaq.settings import load_settings
from typer.testing import CliRunner

#: the report's file: YAML reads the date as a date and atom_types as one string
NATURAL = """\
title: Si wedge, 4D-STEM at 300 kV
experiment_identifier: P-2026-17
sample:
  name: Si wedge
  atom_types: Si
  preparation_date: 2026-11-30
users:
  - name: A. User
    affiliation: Lab
    orcid: 0000-0002-1825-0097
microscope:
  serial_number: 3946
"""

NOMAD_ELN = """\
entry:
  end_time: '2025-03-22T10:02:00+00:00'
  experiment_alias: InGaN
  experiment_description: '<p>normal<br /><strong>bold</strong></p>

    <p><em>italics</em></p>'
  start_time: '2025-03-22T10:02:00+00:00'
sample:
  chemical_formula: InGaN
  description: '<p>normal<br /><strong>bold</strong></p>

    <p><em>italics</em></p>'
  is_simulation: false
  name: InGaN
  preparation_date: '2025-03-22T10:02:00+00:00'
  thickness:
    unit: nm
    value: 999.9999999999999
user:
- name: Aidan
  orcid: 0000-0000-0000-0000
- name: JonasL
- name: MarkusK
"""

KOCH_SITE = """\
# first line mandatory hint for pynxtools-em to decide which custom ELN parser to use
parser: ger_berlin_koch_group
instrument:
  location: Humboldt-Universität zu Berlin, Center for the Science of Materials Berlin (CSMB)
  name: Nion HERMES
  vendor: Bruker-Nion
  model: HERMES
  serial_number: 1
  capabilities: monochromated, aberration-corrected
ebeam_column:
  vendor: Bruker-Nion
  model: HERMES
  serial_number: 1
electron_source:
  name: Nion HERMES
  voltage:
    unit: V
    value: 200000
  emitter_type: field_emission
"""

SITE = """\
microscope:
  name: TEM-1
  vendor: Thermo Fisher Scientific
  model: Spectra 300
  serial_number: 3946
  location: Room B.12
  emitter_type: cold field emission
calibration:
  beam_energy: 300000
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def local_midnight(day: dt.date) -> str:
    return dt.datetime.combine(day, dt.time()).astimezone().isoformat()


# -- lenient values ----------------------------------------------------------------------------


def test_the_reported_natural_yaml_loads(tmp_path):
    changes = load_metadata_file(write(tmp_path, "m.yaml", NATURAL))
    md = changes["metadata"]
    assert md["sample"] == {
        "name": "Si wedge",
        "atom_types": ["Si"],
        "preparation_date": local_midnight(dt.date(2026, 11, 30)),
    }
    assert md["users"] == [
        {"name": "A. User", "affiliation": "Lab", "orcid": "0000-0002-1825-0097"}
    ]
    assert md["microscope"] == {"serial_number": "3946"}  # YAML's int, taken as the text
    assert "calibration" not in changes
    # the same through the CLI's loader and into a config
    assert load_metadata(tmp_path / "m.yaml") == md
    AcquisitionConfig.model_validate({"metadata": md})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Si", ["Si"]),
        ("Si, O", ["Si", "O"]),
        ("Si O", ["Si", "O"]),
        (["Si", "O", "Si"], ["Si", "O"]),
        (["Si, O", "N"], ["Si", "O", "N"]),
        ("", None),
    ],
)
def test_atom_types_as_one_string_or_a_list(given, expected):
    assert SampleMetadata(atom_types=given).atom_types == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (dt.date(2026, 11, 30), local_midnight(dt.date(2026, 11, 30))),
        (
            dt.datetime(2026, 11, 30, 14, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2026-11-30T14:05:00+01:00",
        ),
        (dt.datetime(2026, 11, 30, 14, 5), dt.datetime(2026, 11, 30, 14, 5).astimezone()),
        ("2026-11-30", local_midnight(dt.date(2026, 11, 30))),
        ("2026-11-30 14:05:00Z", "2026-11-30T14:05:00+00:00"),
        ("2024-05-01T10:00:00.5+02:00", "2024-05-01T10:00:00.5+02:00"),  # NX_DATE_TIME: kept
    ],
)
def test_dates_become_nx_date_time(given, expected):
    if isinstance(expected, dt.datetime):
        expected = expected.isoformat()
    assert SampleMetadata(preparation_date=given).preparation_date == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sample:\n  atom_types: Si, Xx\n",
            "sample.atom_types: 'Xx' is not a chemical element symbol",
        ),
        (
            "sample:\n  atom_types: si\n",
            "'si' is not a chemical element symbol (did you mean 'Si'?)",
        ),
        ("sample:\n  preparation_date: last week\n", "sample.preparation_date: not an ISO 8601"),
        ("users:\n  - nam: A. User\n", "users: person 0 has an unknown key 'nam'"),
        ("dwell_time: -1\n", "dwell_time: Input should be greater than 0"),
        ("sample:\n  colour: red\n", "sample.colour: Extra inputs are not permitted"),
        ("sample: [1, 2\n", "not YAML/JSON (line 2"),
        ("- a list\n", "expected a mapping of metadata, got list"),
        ("entry:\n  experiment_alias: x\ntitle: y\n", "mixes the pynxtools-em ELN (entry)"),
        ("electron_source:\n  voltage: {value: -3, unit: kV}\n", "electron_source.voltage: Input"),
        ("electron_source:\n  voltage: {value: 3, unit: furlong}\n", "unknown unit 'furlong'"),
    ],
)
def test_an_invalid_file_is_one_line_without_urls(tmp_path, text, expected):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_metadata_file(path)
    message = str(info.value)
    assert "\n" not in message and "http" not in message, message
    assert message.startswith(f"metadata file {path}: "), message
    assert expected in message, message


def test_two_invalid_fields_are_two_parts_of_one_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "sample:\n  atom_types: Qq\n  preparation_date: soon\n")
    with pytest.raises(ConfigError) as info:
        load_metadata_file(path)
    parts = str(info.value).split(": ", 1)[1].split("; ")
    assert [p.split(":")[0] for p in parts] == ["sample.atom_types", "sample.preparation_date"]


def test_acquire_refuses_a_bad_metadata_file_in_one_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "sample:\n  atom_types: Si, Xx\n")
    result = CliRunner().invoke(
        app,
        ["acquire", "--stream", "tcp://127.0.0.1:9", "--metadata", str(path), "-o", "x.nxs"],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 2
    assert "'Xx' is not a chemical element symbol" in result.output
    assert "pydantic" not in result.output and "http" not in result.output


# -- the pynxtools-em ELN convention ----------------------------------------------------------


def test_nomad_eln_data_maps_onto_user_metadata(tmp_path, caplog):
    changes = load_metadata_file(write(tmp_path, "scan.eln_data.yaml", NOMAD_ELN))
    md = UserMetadata.model_validate(changes["metadata"])
    assert md.title == "InGaN"
    assert md.experiment_description.startswith("<p>normal")
    assert md.sample.name == "InGaN"
    assert md.sample.atom_types == ["In", "Ga", "N"]  # from chemical_formula
    assert md.sample.preparation_date == "2025-03-22T10:02:00+00:00"
    assert md.sample.thickness == pytest.approx(1e-6)  # 1000 nm
    assert md.users == [
        {"name": "Aidan", "orcid": "0000-0000-0000-0000"},
        {"name": "JonasL"},
        {"name": "MarkusK"},
    ]
    assert "calibration" not in changes
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_custom_eln_of_a_site_gives_microscope_and_beam_energy(tmp_path):
    changes = load_metadata_file(write(tmp_path, "site.custom_eln_data.yaml", KOCH_SITE))
    assert changes["metadata"] == {
        "microscope": {
            "name": "Nion HERMES",
            "vendor": "Bruker-Nion",
            "model": "HERMES",
            "serial_number": "1",
            "location": "Humboldt-Universität zu Berlin, Center for the Science of Materials "
            "Berlin (CSMB)",
            "emitter_type": "field_emission",
        }
    }
    assert changes["calibration"] == {"beam_energy": 200000.0}


def test_format_detection():
    assert detect_format({"sample": {"name": "x"}}) == "stemdaq"
    assert detect_format({"sample": {"name": "x", "chemical_formula": "Si"}}) == "eln"
    assert detect_format({"user": [{"name": "a"}]}) == "eln"
    assert detect_format({"users": [{"name": "a"}], "microscope": {}}) == "stemdaq"
    with pytest.raises(ConfigError, match="mixes"):
        detect_format({"user": [], "users": []})


def test_eln_errors_name_the_eln_keys():
    doc = {"user": [{"name": "A", "orcid": 1}, {}], "scan_controller": {"dwell_time": "0 us"}}
    with pytest.raises(ConfigError, match=r"scan_controller\.dwell_time: Input should be greater"):
        config_changes(doc)
    doc = {"user": [{"name": "A"}], "instrument": {"vendor": "x" * 2000}}
    with pytest.raises(ConfigError, match=r"instrument\.vendor: String should have at most"):
        config_changes(doc)


def test_eln_keys_stemdaq_does_not_use_are_a_warning(caplog):
    changes = config_changes({"sample": {"name": "x", "is_simulation": True, "type": "exp"}})
    assert changes == {"metadata": {"sample": {"name": "x"}}}
    assert "sample.type" in caplog.text


# -- the site file and the merge order ---------------------------------------------------------


def test_site_under_metadata_file_under_flags(tmp_path):
    site = write(tmp_path, "site.yaml", SITE)
    eln = write(
        tmp_path,
        "scan.eln_data.yaml",
        NOMAD_ELN + "instrument:\n  location: Room C.3\n",
    )
    values = metadata_changes(site, eln)
    flags = {"calibration": {"beam_energy": 80e3}, "metadata": {"microscope": {"name": "TEM-2"}}}
    config = merge_config(AcquisitionConfig.model_validate(values), flags)
    m = config.metadata.microscope
    assert (m.vendor, m.model, m.serial_number) == (
        "Thermo Fisher Scientific",
        "Spectra 300",
        "3946",
    )
    assert m.location == "Room C.3"  # the acquisition's file over the site
    assert m.name == "TEM-2"  # the flag over both
    assert config.calibration.beam_energy == 80e3
    assert config.metadata.sample.name == "InGaN"


def test_service_settings_take_the_site_file_from_env(tmp_path, monkeypatch):
    site = write(tmp_path, "site.yaml", SITE)
    settings_file = write(
        tmp_path, "stemdaq.yaml", "acquisition:\n  metadata:\n    microscope:\n      name: TEM-9\n"
    )
    monkeypatch.setenv("STEMDAQ_SITE_METADATA", str(site))
    settings = load_settings(settings_file, data_dir=tmp_path)
    assert settings.site_metadata == site
    acq = settings.acquisition
    assert acq.metadata.microscope.vendor == "Thermo Fisher Scientific"
    assert acq.metadata.microscope.name == "TEM-9"  # the settings file over the site
    assert acq.calibration.beam_energy == 300e3
    # REST changes merge over it and keep the rest
    changed = merge_config(acq, {"metadata": {"microscope": {"model": "Spectra Ultra"}}})
    assert changed.metadata.microscope.vendor == "Thermo Fisher Scientific"
    assert changed.metadata.microscope.model == "Spectra Ultra"


def test_a_bad_site_file_is_one_line_at_startup(tmp_path):
    site = write(tmp_path, "site.yaml", "microscope:\n  vendr: X\n")
    with pytest.raises(ConfigError) as info:
        load_settings(None, site_metadata=site)
    message = str(info.value)
    assert "\n" not in message and "http" not in message
    assert re.search(r"site_metadata: metadata file .*microscope\.vendr: Extra inputs", message)


def test_acquire_merges_site_metadata_file_and_flags(tmp_path):
    """The real command against the simulator: site < --metadata < flags, in the file."""
    site = write(tmp_path, "site.yaml", SITE)
    meta = write(tmp_path, "m.yaml", NATURAL.replace("serial_number: 3946", "location: Room C.3"))
    sim = subprocess.Popen(
        [sys.executable, "-m", "stemdaq.cli", "sim", "--rest-port", "0", "--stream-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = sim.stdout.readline()
        ports = re.search(r"rest_port=(\d+) stream_port=(\d+)", line)
        assert ports, line
        out = tmp_path / "scan.nxs"
        args = ["--detector", f"http://127.0.0.1:{ports[1]}"]
        args += ["--stream", f"tcp://127.0.0.1:{ports[2]}", "--scan", "2x3", "--timeout", "20"]
        args += ["--metadata", str(meta), "--beam-energy", "200000", "-o", str(out)]
        args += ["--set", "metadata.microscope.model=Spectra Ultra"]
        result = subprocess.run(
            [sys.executable, "-m", "stemdaq.cli", "acquire", *args],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "STEMDAQ_SITE_METADATA": str(site)},
        )
        assert result.returncode == 0, result.stderr + result.stdout
    finally:
        sim.terminate()
        sim.communicate(timeout=10)
    inst = "/entry/measurement/instrument"
    with h5py.File(out, "r") as f:
        text = {p: f[p][()].decode() for p in (f"{inst}/fabrication/vendor", f"{inst}/location")}
        assert text[f"{inst}/fabrication/vendor"] == "Thermo Fisher Scientific"  # site
        assert text[f"{inst}/location"] == "Room C.3"  # --metadata over the site
        assert f[f"{inst}/fabrication/model"][()].decode() == "Spectra Ultra"  # --set
        assert f[f"{inst}/ebeam_column/electron_source/voltage"][()] == 200000  # the flag
        assert f["/entry/sample/atom_types"][()].decode() == "Si"
        assert f["/entry/sample/preparation_date"][()].decode() == local_midnight(
            dt.date(2026, 11, 30)
        )
