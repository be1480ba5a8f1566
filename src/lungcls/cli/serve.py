"""``lungcls serve``: the local web viewer and HTTP API (:mod:`lungcls.serve`)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from .app import app, library_errors
from .options import Common, Device, fail, opt


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command("serve")
def serve(
    model: Annotated[
        Path | None, opt("A bundle or train-cls run folder (default: the built-in segmenters, no classifier).", "DIR")
    ] = None,
    host: Annotated[str, opt("Address to listen on; anything but loopback needs --token.", "HOST")] = "127.0.0.1",
    port: Annotated[int, opt("Port to listen on.", "PORT")] = 8000,
    token: Annotated[
        str | None, opt("Token every /v1 request must carry (Authorization: Bearer; or LUNGCLS_TOKEN).", "TOKEN")
    ] = None,
    max_upload_mb: Annotated[float, opt("Largest request body, in MB (413 above).", "MB")] = 32.0,
    max_files: Annotated[int, opt("Most files in one request (413 above).", "N")] = 32,
    timeout: Annotated[float, opt("Seconds until a request is answered 504.", "S")] = 120.0,
    batch_window: Annotated[float, opt("Seconds to collect concurrent requests into one device batch.", "S")] = 0.01,
    no_infection: Annotated[
        bool, opt("Do not measure infection (the built-in infection segmenter).", "", "--no-infection")
    ] = False,
    device: Device = None,
    common: Common = None,
) -> None:
    """Serve a page to drop CXRs on (overlays, crop, class, explanation, flags, the gate's verdict; CSV and zip
    downloads) and an HTTP API with the same results as JSON (/v1/predict, /v1/segment, /v1/models, /healthz;
    OpenAPI page at /docs). Offline; research use only."""
    try:
        import uvicorn

        from ..serve import Limits, ServedModels, create_app
    except ImportError as e:
        raise fail(f"lungcls serve needs its extra: pip install 'lungcls[serve]' ({e})") from None
    token = token or os.environ.get("LUNGCLS_TOKEN") or None
    if not _loopback(host) and not token:
        raise fail(f"--host {host} is reachable from other machines: set --token (or LUNGCLS_TOKEN)")
    with library_errors():
        models = ServedModels.load(model, common.device(device), infection=not no_infection)
    limits = Limits(int(max_upload_mb * 2**20), max_files, timeout, batch_window)
    typer.echo(
        f"lungcls serve: {models.source} on http://{host}:{port}/ (research use only; Ctrl-C stops it)", err=True
    )
    uvicorn.run(create_app(models, limits, token), host=host, port=port, log_level="warning")
