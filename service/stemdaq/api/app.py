"""``create_app(settings)``: the FastAPI application of the stemdaq service.

Routers per resource under ``/api/v1``; ``/healthz`` and ``/metrics`` at the root. The lifespan
starts the :class:`~stemdaq.manager.AcquisitionManager` (loads the history) and, at shutdown,
aborts a running acquisition and waits for its file to close. ``/docs`` and ``/redoc`` load their
JavaScript and CSS from stemdaq itself (fastapi-offline), not from a CDN: beamline networks are
often offline. ``/`` serves the live-view page from ``clients/web`` (plain files, no build
step, nothing fetched from the internet).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stemdaq import __version__
from stemdaq.api import errors, redact
from stemdaq.api.routes import acquisitions, config, events, live, status
from stemdaq.api.schemas import Health
from stemdaq.live.hub import LiveHub
from stemdaq.manager import AcquisitionFactory, AcquisitionManager
from stemdaq.metrics import build_registry
from stemdaq.rank import lane
from stemdaq.receiver import blockwalk
from stemdaq.settings import Settings

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: the handler's name (``get_status``, ``arm_acquisition``)."""
    return route.name


def create_app(
    settings: Settings,
    *,
    factory: AcquisitionFactory | None = None,
    include_routers: Sequence[tuple[APIRouter, str]] = (),
) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    settings
        Service settings (data directory, token, default acquisition config).
    factory
        Builds acquisitions; default :class:`stemdaq.acquisition.Acquisition`.
    include_routers
        Extra ``(router, prefix)`` pairs to mount (e.g. an HDF5 browser).
    """
    hub = LiveHub()  # remembers the newest acquisition for the live view
    manager = AcquisitionManager(settings, factory=hub.wrap(factory))
    registry = build_registry(manager)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact.install()  # uvicorn has configured its loggers by now
        await manager.start()
        logger.info("stemdaq %s serving data from %s", __version__, manager.data_dir)
        if not (blockwalk.COMPILED and lane.BUILT):
            logger.info(blockwalk.BUILT_WITHOUT_C)
        try:
            yield
        finally:
            await manager.close()

    app = FastAPIOffline(  # a FastAPI app whose /docs and /redoc assets are served locally
        title="stemdaq",
        version=__version__,
        summary="4D-STEM acquisition service: DECTRIS stream in, NeXus HDF5 out.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        swagger_ui_parameters={"validatorUrl": None},  # no call to the online spec validator
    )
    app.state.settings = settings
    app.state.manager = manager
    app.state.live = hub
    errors.install(app)

    api = APIRouter(prefix=API_PREFIX)
    for module in (status, config, acquisitions, events, live):
        api.include_router(module.router)
    app.include_router(api)
    for router, prefix in include_routers:
        app.include_router(router, prefix=prefix)

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def get_health() -> Health:
        """Liveness: answers while the event loop runs."""
        return Health(status="ok", version=__version__)

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def get_metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    web = web_dir()  # last: the mount at / matches every path
    if web is not None:  # the page (no build step): index.html, JS, CSS
        app.mount("/", StaticFiles(directory=web, html=True), name="web")
    return app


def web_dir() -> Path | None:
    """The page's files: ``clients/web`` beside the package (a source checkout or an editable
    install), else ``<prefix>/share/stemdaq/web`` (a wheel install); None when absent."""
    candidates = [base / "clients" / "web" for base in Path(__file__).resolve().parents]
    candidates.append(Path(sys.prefix) / "share" / "stemdaq" / "web")
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate
    logger.warning("the live-view page (clients/web) is not installed: / answers 404")
    return None
