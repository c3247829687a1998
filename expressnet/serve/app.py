"""The FastAPI app: ``create_app(settings)`` (routers, limits, auth, metrics, the page) and ``run(settings)``
(uvicorn). The model loads in the app's lifespan, before the first request is served."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..version import __version__
from .engine import Engine
from .errors import ApiError, error_body
from .metrics import Metrics
from .middleware import RequestContext, RequestIdFilter
from .routers import docs, faces, page, stream, system, videos
from .settings import Settings

log = logging.getLogger("expressnet.serve")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, request_id(request)), exc.status, exc.headers)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(exc.detail, request_id(request)), exc.status_code, getattr(exc, "headers", None))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    messages = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return JSONResponse(error_body("; ".join(messages), request_id(request)), 422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for ``settings`` (default: the shipped model on 127.0.0.1:8000)."""
    settings = settings or Settings()
    metrics = Metrics()
    engine = Engine(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(engine.load)
        m = engine.model_summary()
        log.info(
            "model %s (%s, %s %s) loaded in %.2f s; %d inference threads",
            m["name"],
            m["sha256"],
            m["backend"],
            m["precision"],
            engine.loaded_s,
            settings.workers,
        )
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(
        title="ExpressNet",
        version=__version__,
        description="Faces and facial expressions in images, videos and live streams.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc load Swagger UI / ReDoc from a CDN; docs.add_docs serves it here
        redoc_url=None,
    )
    app.state.settings, app.state.engine = settings, engine
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(RequestContext, metrics=metrics)
    for module in (faces, videos, stream, system, page):
        app.include_router(module.router)
    docs.add_docs(app, app.title)
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    return app


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class ReadyServer(uvicorn.Server):
    """A uvicorn server that calls ``on_ready()`` once it accepts connections: after the app's lifespan has
    loaded the model and the socket is bound, never before."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()


def run(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Serve ``settings`` with uvicorn until interrupted (one process; ``workers`` inference threads);
    ``on_ready()`` is called when the port accepts connections (the model loaded)."""
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the middleware logs each request with its id
        ws_max_size=settings.max_upload_bytes,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
    )
    ReadyServer(config, on_ready).run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(settings: Settings, timeout_s: float = 60.0) -> Iterator[tuple[str, FastAPI]]:
    """A real uvicorn on ``settings.host`` (port 0: a free one) in a background thread, for notebooks and tests;
    yields the base URL and the app, and stops the server on exit."""
    port = settings.port or free_port(settings.host)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="expressnet-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {settings.host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{settings.host}:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout_s)
