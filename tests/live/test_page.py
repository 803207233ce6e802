"""The page at / in headless Chromium (Debian's, driven by Playwright): start an acquisition
from the page (token prompt), progress reaches 100 %, the virtual image is drawn from the same
values as the API's .npy, the annulus is changed from the page; a screenshot for the README."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api.conftest import ServerThread
from conftest import SCAN, Sim, live_npy
from stemdaq.acquisition import Acquisition
from stemdaq.api.app import create_app
from stemdaq.live.render import viridis_lut
from stemdaq.settings import Settings

CHROMIUM = "/usr/bin/chromium"
TOKEN = "page-token"
#: the README's screenshot, rewritten only with STEMDAQ_UPDATE_SCREENSHOT=1 (tests do not
#: change the checkout otherwise)
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "live-view.png"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} (Debian's chromium package) is absent"
)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(lattice_sim: Sim, tmp_path: Path) -> Iterator[ServerThread]:
    config = {**lattice_sim.live_config(), "live_update_hz": 10}
    for key in ("live_center", "live_bf_radius", "live_adf_inner", "live_adf_outer"):
        config.pop(key)  # the page shows the geometry found in the summed pattern
    settings = Settings(data_dir=tmp_path, api={"token": TOKEN}, acquisition=config)
    with ServerThread(create_app(settings, factory=Acquisition)) as srv:
        yield srv


def _finished(page: Any) -> None:
    page.wait_for_function(
        "() => { const h = window.stemdaqLive.header;"
        f" return h && h.finished && h.filled === {SCAN[0] * SCAN[1]}; }}",
        timeout=60_000,
    )


def test_page_runs_a_scan_and_draws_the_maps(server: ServerThread, tmp_path: Path) -> None:
    shot = tmp_path / "live-view.png"
    url = server.url
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda d: d.accept(TOKEN))  # the token prompt at the first 401
            page.goto(url + "/")
            page.wait_for_selector("#state[data-state='idle']")
            page.click("#start")
            page.wait_for_selector("#state[data-state='completed']", timeout=60_000)
            page.wait_for_function(
                "() => document.getElementById('progress-pct').textContent === '100 %'"
            )
            _finished(page)
            page.select_option("#map-select", "adf")

            # the canvas holds the .npy's values, coloured with the page's limits
            adf = live_npy(url, "adf")
            got = np.array(page.evaluate("Array.from(window.stemdaqLive.maps.adf)"), np.float32)
            np.testing.assert_array_equal(got.reshape(SCAN), adf)
            drawn = page.evaluate("window.stemdaqLive.drawn")
            assert drawn["name"] == "adf" and drawn["width"] == SCAN[1]
            pixels = np.array(
                page.evaluate(
                    "() => Array.from(document.getElementById('map-canvas').getContext('2d')"
                    ".getImageData(0, 0, 512, 512).data)"
                ),
                np.uint8,
            ).reshape(512, 512, 4)
            assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20, "not blank"
            lut, s = viridis_lut(), drawn["scale"]
            for m, k in ((0, 0), (3, 7), (10, 20), (15, 2)):
                v = (adf[m, k] - drawn["lo"]) * (255 / (drawn["hi"] - drawn["lo"]))
                want = lut[int(np.clip(np.floor(v), 0, 255))]
                have = pixels[m * s + s // 2, k * s + s // 2, :3]
                assert np.abs(have.astype(int) - want).max() <= 2, (m, k, have, want)
            assert page.evaluate("window.stemdaqLive.scaleBar.nm") > 0

            # a new annulus from the page's number fields
            page.fill("#g-inner", "13")
            page.fill("#g-outer", "27")
            page.click("#g-apply")
            page.wait_for_function(
                "() => window.stemdaqLive.header.detectors.adf_outer === 27", timeout=30_000
            )
            got = np.array(page.evaluate("Array.from(window.stemdaqLive.maps.adf)"), np.float32)
            np.testing.assert_array_equal(got.reshape(SCAN), live_npy(url, "adf"))
            assert not np.array_equal(got.reshape(SCAN), adf)
            page.wait_for_function("() => document.querySelectorAll('#history tr').length >= 1")
            page.select_option("#map-select", "bf")  # the lattice shows best in bright field
            page.wait_for_timeout(1000)  # the summed pattern (fetched at most every 0.7 s)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("STEMDAQ_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SCREENSHOT)
