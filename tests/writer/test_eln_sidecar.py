"""Site + ELN metadata make an NXem-valid file; the ELN sidecar is written, read back, kept."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest
import yaml
from stemdaq.commands.files import metadata_changes
from stemdaq.config import AcquisitionConfig, UserMetadata
from stemdaq.eln import load_metadata_file
from stemdaq.writer.eln import sidecar_path, write_eln_sidecar
from writer_helpers import FULL_METADATA, config, start, write_scan

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

#: as NOMAD's ELN writes it (pynxtools-em's em.scheme.archive.yaml), every section filled
ELN = """\
entry:
  experiment_alias: Si wedge
  experiment_description: <p>tilt series</p>
  start_time: '2026-12-01T10:02:00+00:00'
project:
  name: CorMic
sample:
  name: Si wedge
  atom_types: Si, O
  preparation_date: 2026-11-30
  thickness:
    value: 40
    unit: nm
  description: FIB lamella
  is_simulation: false
user:
- name: A. User
  affiliation: Lab
  address: 1 Road, Town
  email: a.user@example.org
  orcid: 0000-0002-1825-0097
  telephone_number: '+49 30 0000'
  role: operator
- {}
"""


def _scan_config(tmp_path: Path) -> AcquisitionConfig:
    (tmp_path / "site.yaml").write_text(SITE)
    (tmp_path / "m.eln_data.yaml").write_text(ELN)
    values = metadata_changes(tmp_path / "site.yaml", tmp_path / "m.eln_data.yaml")
    values["metadata"]["dwell_time"] = 1e-3
    return config(**values)


@pytest.mark.validator
def test_site_and_eln_metadata_make_a_valid_nxem_file(tmp_path):
    exe = shutil.which("pynx")
    if exe is None:  # pragma: no cover - pynxtools is a test dependency
        pytest.skip("pynx not installed")
    final, _ = write_scan(tmp_path / "scan.nxs", _scan_config(tmp_path), summary=True)
    out = subprocess.run([exe, "validate", str(final)], capture_output=True, text=True, timeout=120)
    lines = (out.stdout + out.stderr).splitlines()
    assert any("is valid according to the `NXem`" in ln for ln in lines), lines
    assert not [ln for ln in lines if "WARNING" in ln or "ERROR" in ln], lines
    with h5py.File(final, "r") as f:
        assert f["/entry/experiment_alias"][()].decode() == "Si wedge"
        assert f["/entry/project/name"][()].decode() == "CorMic"
        assert f["/entry/sample/atom_types"][()].decode() == "Si, O"
        assert f["/entry/sample/thickness"][()] == pytest.approx(40e-9)
        assert f["/entry/user1/telephone_number"][()].decode() == "+49 30 0000"
        assert "user2" not in f["/entry"]  # NOMAD's empty {} is no person
        inst = f["/entry/measurement/instrument"]
        assert inst["fabrication/serial_number"][()].decode() == "3946"
        assert inst["ebeam_column/electron_source/voltage"][()] == 300e3


@pytest.mark.parametrize("source", ["eln", "full"])
def test_the_sidecar_reads_back_into_the_same_metadata(tmp_path, source):
    cfg = _scan_config(tmp_path) if source == "eln" else config(metadata=FULL_METADATA)
    final, _ = write_scan(tmp_path / "scan.nxs", cfg)
    side = sidecar_path(final)  # the writer wrote it at the clean close
    assert side == tmp_path / "scan.eln_data.yaml" and side.is_file()
    assert write_eln_sidecar(final, cfg, start().detector) is None  # never written twice
    assert not side.name.endswith("custom_eln_data.yaml")  # pynxtools-em's generic ELN parser

    changes = load_metadata_file(side)
    assert UserMetadata.model_validate(changes["metadata"]) == cfg.metadata
    doc = yaml.safe_load(side.read_text())
    with h5py.File(final, "r") as f:
        assert doc["entry"]["start_time"] == f["/entry/start_time"][()].decode()
        assert doc["entry"]["end_time"] == f["/entry/end_time"][()].decode()
        assert doc["sample"]["is_simulation"] is bool(f["/entry/sample/is_simulation"][()])
    # pynxtools-em splits atom_types on commas: it must be one text
    assert isinstance(doc["sample"]["atom_types"], str)
    assert doc["detector"][0]["serial_number"] == "E-32-0001"
    if source == "eln":
        assert changes["calibration"] == {"beam_energy": 300e3}
        assert doc["electron_source"]["voltage"] == {"value": 300e3, "unit": "V"}
        assert doc["sample"]["thickness"] == {"value": pytest.approx(40e-9), "unit": "m"}
    # nothing else left in the folder (no temporary file)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_existing_sidecar_is_never_replaced(tmp_path):
    cfg = config(metadata=FULL_METADATA)
    final, _ = write_scan(tmp_path / "scan.nxs", cfg)
    mine = sidecar_path(final)
    mine.write_text("entry:\n  experiment_alias: edited in NOMAD\n")
    assert write_eln_sidecar(final, cfg, start().detector) is None
    assert mine.read_text() == "entry:\n  experiment_alias: edited in NOMAD\n"
    # a dangling link counts as existing too
    mine.unlink()
    os.symlink(tmp_path / "elsewhere.yaml", mine)
    assert write_eln_sidecar(final, cfg, None) is None
    assert not (tmp_path / "elsewhere.yaml").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # the data file written with --overwrite: its sidecar is replaced with it, on request only
    assert write_eln_sidecar(final, cfg, None, overwrite=True) == mine
    assert not mine.is_symlink() and "writer test" in mine.read_text()


def test_no_sidecar_for_a_partial_file_or_an_unwritable_folder(tmp_path):
    cfg = config(metadata=FULL_METADATA)
    assert write_eln_sidecar(tmp_path / "scan.nxs.partial", cfg, None) is None
    assert list(tmp_path.iterdir()) == []
    # a file that cannot be read and a folder that does not exist: a warning, not an error
    assert write_eln_sidecar(tmp_path / "gone" / "scan.nxs", cfg, None) is None
