"""Dependencies and parameter models shared by the routers: the engine, API-key auth, detector options."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engine import DetectOptions, Engine
from .errors import ApiError
from .settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API key, if it has one.")
bearer = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def key_matches(given: str | None, expected: str | None) -> bool:
    """True when no key is configured, or ``given`` equals it (constant-time comparison)."""
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer KEY``."""
    if headers.get("x-api-key"):
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorized() -> ApiError:
    return ApiError(
        401, "missing or wrong API key: send it as X-API-Key or Authorization: Bearer", {"WWW-Authenticate": "Bearer"}
    )


def require_api_key(
    request: Request,
    _header: str | None = Depends(api_key_header),
    _bearer: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    """401 unless the request carries the configured key (no key configured: open)."""
    if not key_matches(key_from_headers(request.headers), get_settings(request).api_key):
        raise unauthorized()


class DetectParams(BaseModel):
    """Detector and alignment options (query parameters, or multipart form fields for uploads)."""

    model_config = ConfigDict(extra="ignore")

    tiles: Annotated[int, Field(ge=1, le=4)] | Literal["auto"] = Field(
        "auto",
        description="BlazeFace: 'auto' (default) scans the whole image plus a TxT grid of tiles with T chosen from "
        "the image's size (small faces in large photos; 1 for small images); a number forces T: 1 is one pass "
        "over the whole image, 2-4 add a fixed TxT grid.",
    )
    min_score: float | None = Field(None, ge=0, le=1, description="Detector score threshold (default 0.5).")
    align: bool = Field(False, description="Rotate faces so the eyes are level before classifying.")

    def options(self) -> DetectOptions:
        return DetectOptions(self.tiles, self.min_score, self.align)


class GeometryParams(DetectParams):
    """The detector options and the face geometry (query parameters, or multipart form fields)."""

    geometry: bool = Field(
        False,
        description="Add each face's head pose, gaze, eye and mouth openness and looking_at_camera (geometry on "
        "MediaPipe's face mesh and iris landmarks, not learned; about twice the time per face); in videos and "
        "streams, each track's blinks too (a face's `blink` at the frame its track ends one).",
    )
    mesh: bool = Field(False, description="Add the 468 face-mesh points [x, y, z] too (implies geometry).")


class StreamParams(GeometryParams):
    smooth: float | None = Field(
        None, gt=0, le=1, description="Smooth each track's probabilities: p = a*new + (1-a)*p (0 < a <= 1)."
    )


class VideoParams(StreamParams):
    every: int = Field(1, ge=1, le=10_000, description="Process every N-th frame.")
    max_frames: int | None = Field(None, ge=1, description="Stop after this many processed frames.")


def validated(model: type[BaseModel], given: BaseModel | None, extra: Mapping[str, str]) -> BaseModel:
    """``model`` from the explicitly given query parameters and ``extra`` (form fields, which win); 422 with
    the validation messages when they do not fit."""
    values = {**(given.model_dump(exclude_unset=True) if given is not None else {}), **extra}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(422, validation_messages(exc)) from None


def validation_messages(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
