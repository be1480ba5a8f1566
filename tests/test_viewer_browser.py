"""The viewer page of ``lungcls serve`` in a real headless Chromium: upload real CXRs and a photograph, wait for the
results, check the overlays, the numbers, the raw / masked switch and both downloads; a screenshot is written to
``test-artifacts/`` (or ``$LUNGCLS_ARTIFACTS``)."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import skimage.data

pytest.importorskip("fastapi", reason="lungcls serve needs its extra: pip install 'lungcls[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (test extra)")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def server(serve_bundle):
    """``lungcls serve``'s app on a free port of 127.0.0.1, in a thread; its address."""
    import uvicorn

    from lungcls.serve import ServedModels, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServedModels.load(serve_bundle, device="cpu"))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(10)


def test_the_page_shows_overlays_numbers_and_downloads_for_real_cxrs(server, shared_data, tmp_path):
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    base = shared_data / "covidqu-infseg" / "COVID-QU-Ex Dataset" / "Infection Segmentation Data"
    cxrs = sorted((base / "Infection Segmentation Data" / "Val" / "COVID-19" / "images").iterdir())[:2]
    photo = Path(skimage.data.__file__).parent / "astronaut.png"
    artifacts = Path(os.environ.get("LUNGCLS_ARTIFACTS", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page.goto(server + "/")
        assert "Research use only" in page.inner_text("#research") and page.is_visible("#research")
        page.wait_for_function("document.getElementById('models').textContent.includes('classifier resnet18')")
        page.set_input_files("#files", [str(f) for f in [*cxrs, photo]])
        page.wait_for_function("document.querySelectorAll('.card').length === 3", timeout=180_000)
        widths = page.eval_on_selector_all(".card img.overlay", "els => els.map(e => e.complete && e.naturalWidth)")
        assert widths[:2] == [256, 256], widths  # the overlays, decoded, at the images' own size
        assert page.locator(".card img.explanation").count() == 2  # the photograph was refused: nothing to explain
        first, _, refused = (page.locator(".card").nth(k).inner_text() for k in range(3))
        assert any(c in first for c in ("COVID-19", "Non-COVID", "Normal")) and "infection:" in first
        assert "refused: colour" in refused and "no class" in refused
        page.check("input[name=mode][value=raw]")  # the raw classifier's answer for the same images
        assert "raw" in page.inner_text("#modeswitch") and page.locator(".card").count() == 3
        with page.expect_download() as got:
            page.click("#csv")
        rows = list(csv.DictReader(Path(got.value.path()).read_text().splitlines()))
        assert [r["name"] for r in rows] == [f.name for f in [*cxrs, photo]]
        assert rows[2]["decision"] == "refused" and rows[0]["predicted"] in first and rows[0]["p_Normal"]
        with page.expect_download() as got:
            page.click("#zip")
        names = zipfile.ZipFile(got.value.path()).namelist()
        assert f"{cxrs[0].stem}_overlay.png" in names and f"{cxrs[0].stem}_explanation.png" in names
        assert zipfile.ZipFile(got.value.path()).testzip() is None  # every entry's CRC checks out
        page.check("input[name=mode][value=main]")
        assert "not shown (the input gate refused" in page.locator(".card").nth(2).inner_text()
        page.screenshot(path=str(artifacts / "viewer.png"), full_page=True)
        page.goto(server + "/docs")  # the API's description, rendered offline from /openapi.json
        page.wait_for_selector("section.route")
        routes = page.locator("section.route h2").all_inner_texts()
        assert {"POST /v1/predict", "POST /v1/segment", "GET /v1/models", "GET /healthz"} <= set(routes), routes
        browser.close()
    assert (artifacts / "viewer.png").stat().st_size > 10_000
