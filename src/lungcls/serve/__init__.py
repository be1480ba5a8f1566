"""``lungcls serve``: a local web viewer and HTTP API over the built-in models or a bundle (extra ``serve``).

    from lungcls.serve import ServedModels, create_app
    app = create_app(ServedModels.load("bundle/"))   # an ASGI app: uvicorn, or FastAPI's TestClient

:mod:`lungcls.serve.app` holds the routes and limits, :mod:`lungcls.serve.models` what answers and how results are
built, :mod:`lungcls.serve.batcher` the batching of concurrent requests. Research use only.
"""

from .app import Limits, create_app
from .models import ServedModels

__all__ = ["Limits", "ServedModels", "create_app"]
