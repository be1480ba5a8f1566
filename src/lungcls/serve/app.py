"""The web app of ``lungcls serve``: a page to drop CXRs on, and an HTTP API with the same results as JSON.

===================== ==========================================================================================
``GET /``             the page (plain HTML, CSS and JavaScript from the package; nothing fetched from elsewhere)
``GET /healthz``      ``{"status": "ok"}`` while the server is up (no token needed)
``GET /v1/models``    what answers: segmenters, gate, classifier, class names, modes
``POST /v1/segment``  lungs (and infection) of the uploaded files (multipart field ``files``)
``POST /v1/predict``  the whole pipeline on them (409 when the server runs without a classifier)
``GET /docs``         the routes, rendered from ``/openapi.json`` (FastAPI's own pages fetch their viewer from a
                      CDN; this one works offline)
===================== ==========================================================================================

``?pictures=true`` adds PNG data URLs, ``?explain=true`` the class-activation map. A request whose files are all
unreadable gets 422 with each file's reason; a request with some readable files gets 200, each unreadable file with
its ``error``. Limits: request size (413), files per request (413), decoded pixels per image (the reader's
decompression-bomb limit: the file's ``error``), time per request (504). Uploaded bytes are decoded in memory;
the names of uploaded files are used in messages only, never as paths. With a token (``--token`` or
``LUNGCLS_TOKEN``) every ``/v1`` route needs ``Authorization: Bearer <token>`` (401 without it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePath

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..outputs import COMMON_FIELDS, prediction_fields
from ..reader import InMemoryFile
from ..seg.infection import INFECTION_FIELDS
from ..version import __version__
from .batcher import Batcher
from .models import ServedModels

RESEARCH_ONLY = "Research use only. Not a diagnostic device: lungcls must not be used to diagnose, treat or triage."
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "docs.js": "text/javascript"}


@dataclass
class Limits:
    """What one request may hold and take.

    Attributes:
        max_bytes: request body, in bytes (413 above); max_files: files per request (413 above);
        timeout: seconds until a request is answered 504; window: seconds the batcher collects requests for.
    """

    max_bytes: int = 32 * 2**20
    max_files: int = 32
    timeout: float = 120.0
    window: float = 0.01


class TooLarge(Exception):
    """The request body passed :attr:`Limits.max_bytes` while it was read."""


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, by its Content-Length or while it streams in."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _too_large(send, self.max_bytes)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise TooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except TooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over the limit of {limit:,} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def create_app(models: ServedModels, limits: Limits | None = None, token: str | None = None) -> FastAPI:
    """The app serving ``models`` (see the module's docstring)."""
    limits = limits or Limits()
    app = FastAPI(title="lungcls", version=__version__, description=RESEARCH_ONLY, docs_url=None, redoc_url=None)
    app.state.models, app.state.limits, app.state.token = models, limits, token
    app.state.batcher = Batcher(_runner(models), limits.window, max_images=64)
    app.state.pages = {n: resources.files("lungcls.serve").joinpath("static", f"{n}.html").read_text(encoding="utf-8")
                       for n in ("index", "docs")}  # fmt: skip
    app.state.assets = {n: resources.files("lungcls.serve").joinpath("static", n).read_bytes() for n in STATIC}
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=limits.max_bytes)
    return app


def authorised(request: Request) -> None:
    """401 unless the request carries the server's token (when it has one)."""
    token = request.app.state.token
    if token is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>'")


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request) -> str:
    return request.app.state.pages["index"]


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
def docs(request: Request) -> str:
    """The OpenAPI description as a page (FastAPI's own pages load their viewers from a CDN: not offline)."""
    return request.app.state.pages["docs"]


@router.get("/static/{name}", include_in_schema=False)
def static(name: str, request: Request) -> Response:
    assets = request.app.state.assets
    if name not in assets:  # a fixed set, held in memory: no request path reaches the file system
        raise HTTPException(404, "no such file")
    return Response(assets[name], media_type=STATIC[name])


@router.get("/healthz")
def healthz() -> dict:
    """Up or not."""
    return {"status": "ok", "version": __version__}


@router.get("/v1/models", dependencies=[Depends(authorised)])
def list_models(request: Request) -> dict:
    """The models that answer, their classes and modes."""
    state = request.app.state
    return state.models.describe() | {"research_use_only": RESEARCH_ONLY, "limits": vars(state.limits)}


@router.post("/v1/segment", dependencies=[Depends(authorised)])
async def segment(
    request: Request,
    files: list[UploadFile] = File(..., description="CXRs: PNG, JPEG, DICOM..."),
    pictures: bool = Query(False, description="add overlay and crop pictures (PNG data URLs)"),
) -> JSONResponse:
    """Lung masks (and infection, with the infection segmenter) of each file, with the gate's verdict."""
    return await _answer(request, "segment", files, pictures, False)


@router.post("/v1/predict", dependencies=[Depends(authorised)])
async def predict(
    request: Request,
    files: list[UploadFile] = File(..., description="CXRs: PNG, JPEG, DICOM..."),
    pictures: bool = Query(False, description="add overlay, crop (and explanation) pictures"),
    explain: bool = Query(False, description="add the class-activation map (slower)"),
) -> JSONResponse:
    """Class, calibrated probabilities, decision, flags, gate, infection of each file."""
    if request.app.state.models.pipeline is None:
        raise HTTPException(409, "no classifier loaded: start the server with `lungcls serve --model BUNDLE`")
    return await _answer(request, "predict", files, pictures, explain)


async def _answer(request: Request, kind: str, files: list[UploadFile], pictures: bool, explain: bool) -> JSONResponse:
    """Read the uploads into memory, wait for their batch, and answer (422 when no file could be read)."""
    state = request.app.state
    limits: Limits = state.limits
    if len(files) > limits.max_files:
        raise HTTPException(413, f"{len(files)} files in one request, over the limit of {limits.max_files}")
    uploads = [InMemoryFile(_name(f.filename, k), await f.read()) for k, f in enumerate(files)]
    try:
        rows = await asyncio.wait_for(state.batcher.submit((kind, pictures, explain), uploads), limits.timeout)
    except asyncio.TimeoutError:
        raise HTTPException(504, f"no answer within {limits.timeout:g} s") from None
    body = {"results": rows, "columns": _columns(kind, state.models), "research_use_only": RESEARCH_ONLY}
    return JSONResponse(body, status_code=422 if all(r.get("error") for r in rows) else 200)


def _runner(models: ServedModels):
    def run(key: tuple, files: list) -> list:
        kind, pictures, explain = key
        return models.run(kind, files, pictures, explain)

    return run


def _name(filename: str | None, k: int) -> str:
    """The uploaded file's base name, for messages only (never a path on this machine)."""
    name = PurePath((filename or "").replace("\\", "/")).name
    return "".join(c for c in name if c.isprintable())[:200] or f"upload-{k + 1}"


def _columns(kind: str, models: ServedModels) -> list[str]:
    """The CSV columns of the results (the same names as ``lungcls predict`` / ``segment`` write)."""
    if kind == "predict" and models.pipeline is not None:
        fields = prediction_fields(models.pipeline.class_names, explain=True)
    else:
        fields = list(COMMON_FIELDS)
    extra = ["gate_accepted"] + (["gate_score"] if "gate_score" not in fields else [])
    extra += list(INFECTION_FIELDS) if models.infection is not None else []
    return fields[:-2] + extra + fields[-2:]
