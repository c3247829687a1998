"""Models, health, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ..deps import get_engine, require_api_key

router = APIRouter(tags=["system"])


@router.get("/v1/models", dependencies=[Depends(require_api_key)])
def models(request: Request) -> dict[str, Any]:
    """The loaded model (classes, preprocessing, backend, metrics, detector) and the shipped ones."""
    engine = get_engine(request)
    return {"loaded": engine.model_info(), "shipped": engine.models()}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The model is not loaded (yet)"}})
def readyz(request: Request) -> JSONResponse:
    """Readiness: the model is loaded and the inference pool runs; with the current load."""
    engine = get_engine(request)
    body = {
        "ready": engine.ready,
        "jobs_in_flight": engine.in_flight,
        "capacity": engine.settings.capacity,
        "streams": engine.streams,
        "load_s": None if engine.loaded_s is None else round(engine.loaded_s, 3),
    }
    return JSONResponse(body, 200 if engine.ready else 503)


@router.get("/metrics", dependencies=[Depends(require_api_key)], response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status, latency histograms, faces, jobs in flight."""
    m = get_engine(request).metrics
    return Response(m.render(), media_type=m.content_type)
