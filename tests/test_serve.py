"""``lungcls serve``'s HTTP API: the same results as the CSVs, clear 4xx errors for bad files, a token, limits, and
concurrent requests batched on the device."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

pytest.importorskip("fastapi", reason="lungcls serve needs its extra: pip install 'lungcls[serve]'")
pytest.importorskip("httpx", reason="the API tests need httpx")
from fastapi.testclient import TestClient

from lungcls.serve import Limits, ServedModels, create_app

SKIMAGE = Path(skimage.data.__file__).parent


@pytest.fixture(scope="module")
def served(serve_bundle) -> ServedModels:
    return ServedModels.load(serve_bundle, device="cpu")


def cxrs(root: Path, n: int = 2) -> list[Path]:
    base = (
        root / "covidqu-infseg" / "COVID-QU-Ex Dataset" / "Infection Segmentation Data" / "Infection Segmentation Data"
    )
    return sorted((base / "Val" / "COVID-19" / "images").iterdir())[:n]


def upload(*paths: Path) -> list:
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def test_predict_answers_with_the_csv_columns_the_gate_the_raw_classifier_and_pictures(served, shared_data):
    from lungcls.outputs import prediction_fields

    client = TestClient(create_app(served))
    assert client.get("/healthz").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["modes"] == ["masked", "raw"] and models["class_names"] == served.pipeline.class_names
    assert (
        models["gate"]
        and models["infection"] == "unet-r18-infection"
        and "Research use only" in models["research_use_only"]
    )
    files = [*cxrs(shared_data), SKIMAGE / "astronaut.png"]
    r = client.post("/v1/predict?pictures=true&explain=true", files=upload(*files))
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert set(prediction_fields(served.pipeline.class_names)) <= set(body["columns"])
    first, _, photo = body["results"]
    assert first["name"] == files[0].name and first["predicted"] in served.pipeline.class_names
    assert first["decision"] in ("answered", "flagged") and first["gate_accepted"] is True and first["error"] == ""
    assert sum(first[f"p_{n}"] for n in served.pipeline.class_names) == pytest.approx(1, abs=1e-3)
    assert first["infection_grade"] in ("none", "mild", "moderate", "severe") and "infection_share_left_lung" in first
    assert first["raw"]["predicted"] in served.pipeline.class_names and "p_Normal" in first["raw"]
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(first["pictures"]["overlay"].split(",")[1]), np.uint8), 1)
    assert overlay.shape[:2] == (first["height"], first["width"])  # at the image's own size
    assert {"crop", "explanation"} <= set(first["pictures"]) and first["in_lung_saliency"] != ""
    assert photo["decision"] == "refused" and "colour" in photo["gate_reasons"] and photo["predicted"] == ""
    # the same image through the Python API gives the same numbers
    same = served.pipeline.predict([files[0]])[0]
    assert first["predicted"] == same.label and first["p_Normal"] == pytest.approx(same.probs["Normal"], abs=1e-4)


def bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes, what the error says)}."""
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")  # 144 M pixels in a few kB
    data = good.read_bytes()
    return {
        "empty.png": (b"", "empty file"),
        "notes.png": (b"these are not pixels\n" * 20, "not an image"),
        "cut.png": (data[: len(data) // 3], "truncated"),
        "bomb.png": (bomb.getvalue(), "decompression bomb"),
        "scan.dcm": (b"\0" * 128 + b"DICM" + b"\x02\x00" * 40, "unreadable DICOM"),
    }


def test_bad_files_get_clear_4xx_errors_and_a_batch_goes_on_past_them(served, shared_data, tmp_path):
    client = TestClient(create_app(served, Limits(max_bytes=4 * 2**20, max_files=8)))
    good = cxrs(shared_data, 1)[0]
    for name, (data, says) in bad_files(tmp_path, good).items():
        r = client.post("/v1/segment", files=[("files", (name, data, "image/png"))])
        assert r.status_code == 422 and says in r.json()["results"][0]["error"], (name, r.text[:500])
        assert r.json()["results"][0]["name"] == name
    mixed = client.post("/v1/segment", files=[("files", ("empty.png", b"", "image/png")), *upload(good)])
    assert mixed.status_code == 200 and [bool(x.get("error")) for x in mixed.json()["results"]] == [True, False]
    huge = client.post("/v1/segment", files=[("files", ("big.png", b"\0" * (5 * 2**20), "image/png"))])
    assert huge.status_code == 413 and "over the limit" in huge.json()["detail"]
    many = client.post("/v1/segment", files=upload(*[good] * 9))
    assert many.status_code == 413 and "files in one request" in many.json()["detail"]
    assert client.post("/v1/segment").status_code == 422  # no files at all
    sneaky = client.post("/v1/segment", files=[("files", ("../../etc/passwd", b"", "image/png"))])
    assert sneaky.json()["results"][0]["name"] == "passwd"  # a name for messages, never a path
    assert client.get("/static/..%2F__init__.py").status_code == 404
    assert client.get("/healthz").status_code == 200  # still up


def test_without_a_bundle_the_server_segments_with_the_built_in_models(shared_data):
    client = TestClient(create_app(ServedModels.load(None, device="cpu")))
    models = client.get("/v1/models").json()
    assert models["classifier"] is None and models["segmenter"] == "unet-r18-covidqu"
    r = client.post("/v1/predict", files=upload(cxrs(shared_data, 1)[0]))
    assert r.status_code == 409 and "--model BUNDLE" in r.json()["detail"]
    r = client.post("/v1/segment?pictures=true", files=upload(cxrs(shared_data, 1)[0]))
    result = r.json()["results"][0]
    assert r.status_code == 200 and 0.1 < result["lung_fraction"] < 0.6 and result["gate_accepted"]
    assert set(r.json()["columns"]) <= set(result) | {"path"}  # every column the CSV has, by the same name
    assert result["infection_share"] > 0 and result["pictures"]["overlay"].startswith("data:image/png;base64,")
    page = client.get("/")
    assert page.status_code == 200 and "Research use only" in page.text and "/static/app.js" in page.text
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert "/openapi.json" in client.get("/docs").text and "cdn" not in client.get("/docs").text.lower()


def test_a_token_guards_the_api(served, shared_data):
    client = TestClient(create_app(served, token="s3cret"))
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_a_request_past_its_time_gets_504(served, shared_data):
    client = TestClient(create_app(served, Limits(timeout=0.001)))
    r = client.post("/v1/predict", files=upload(cxrs(shared_data, 1)[0]))
    assert r.status_code == 504 and "no answer within" in r.json()["detail"]


def test_concurrent_requests_share_a_device_batch_and_each_gets_its_own_answer(served, shared_data):
    import httpx

    files = cxrs(shared_data, 6)
    app = create_app(served, Limits(window=0.5))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*[client.post("/v1/predict", files=upload(f)) for f in files])

    answers = asyncio.run(main())
    assert [a.json()["results"][0]["name"] for a in answers] == [f.name for f in files]
    batches = app.state.batcher.batches
    assert sum(n for n, _ in batches) == len(files) and max(n for n, _ in batches) > 1, batches
    alone = served.pipeline.predict(files)
    assert [a.json()["results"][0]["predicted"] for a in answers] == [p.label for p in alone]


def test_serve_refuses_a_public_address_without_a_token():
    from typer.testing import CliRunner

    from lungcls.cli import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token" in result.output


def test_a_real_cxr_uploaded_as_monochrome1_dicom_is_read_in_memory(served, shared_data, tmp_path):
    from .test_bad_inputs import _dicom

    cxr = cv2.imread(str(cxrs(shared_data, 1)[0]), cv2.IMREAD_GRAYSCALE)
    _dicom(tmp_path / "chest.dcm", (255 - cxr.astype(np.uint16)) * 16)  # 12-bit, bone dark: MONOCHROME1
    client = TestClient(create_app(served))
    r = client.post("/v1/segment", files=upload(tmp_path / "chest.dcm"))
    result = r.json()["results"][0]
    assert r.status_code == 200 and result["gate_accepted"] and 0.1 < result["lung_fraction"] < 0.6, result
