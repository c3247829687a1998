"""``POST /v1/faces``: faces and expressions in one uploaded image."""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...infer.outputs import frame_result
from ..deps import DetectParams, GeometryParams, get_engine, require_api_key, validated
from ..engine import DetectOptions, Engine
from ..limits import IMAGE_FORMATS, decode_upload, receive_upload

router = APIRouter(prefix="/v1", tags=["faces"], dependencies=[Depends(require_api_key)])


class PoseOut(BaseModel):
    """Head pose in degrees: yaw > 0 the person turns to their left, pitch > 0 up, roll > 0 towards their left
    shoulder."""

    yaw: float
    pitch: float
    roll: float


class GazeOut(BaseModel):
    """Gaze direction in the camera's frame, degrees (signs as the head pose)."""

    yaw: float
    pitch: float


class EyesOut(BaseModel):
    """Lid gap over eye width of the person's right and left eye (open about 0.2-0.35, shut under 0.1)."""

    openness_right: float
    openness_left: float


class FaceOut(BaseModel):
    """One face: the schema of ``predict --json`` too (docs/predict.md); the geometry fields only with
    ``geometry=true``."""

    box: list[int]
    score: float
    emotion: str
    probabilities: dict[str, float]
    track_id: int | None = None
    landmarks: list[list[float]] | None = None
    pose: PoseOut | None = None
    gaze: GazeOut | None = None
    eyes: EyesOut | None = None
    mouth_openness: float | None = None
    looking_at_camera: bool | None = None
    mesh: list[list[float]] | None = None


class ImageSize(BaseModel):
    width: int
    height: int


class ModelOut(BaseModel):
    """What every result names: the model, the file run, its sha256 prefix, the backend and the precision."""

    name: str
    file: str
    sha256: str | None
    backend: str
    precision: str


class FacesOut(BaseModel):
    """A frame result, as each line of ``predict --json`` (plus ``timing_ms``)."""

    source: str
    frame: int
    time_s: float | None
    image: ImageSize
    faces: list[FaceOut]
    model: ModelOut
    timing_ms: dict[str, float]


IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": f"An image ({', '.join(IMAGE_FORMATS)}): a multipart `image` field (optionally with "
        "`tiles`, `min_score`, `align`, `geometry`, `mesh` fields) or the raw file with an image/* Content-Type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "tiles": {
                            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"const": "auto"}],
                            "default": "auto",
                            "description": DetectParams.model_fields["tiles"].description,
                        },
                        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                        "align": {"type": "boolean"},
                        "geometry": {"type": "boolean"},
                        "mesh": {"type": "boolean"},
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ERRORS = {
    400: {"description": "Malformed multipart body"},
    401: {"description": "Missing or wrong API key"},
    408: {"description": "The body arrived too slowly"},
    413: {"description": "Body over --max-upload-mb, or image over --max-pixels"},
    415: {"description": "Not an image, or an unsupported format / content type"},
    422: {"description": "Bad parameters, empty or undecodable image"},
    503: {"description": "Saturated: retry after Retry-After seconds"},
}


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def recognise_image(
    engine: Engine,
    data: bytes,
    options: DetectOptions,
    submitted: float,
    source: str = "upload",
    geometry: bool = False,
    mesh: bool = False,
) -> dict[str, Any]:
    """Decode and recognise on an inference thread; times each step. The frame result of ``predict --json``
    (with the faces' geometry, and their meshes, when asked)."""
    timing = {"queue": elapsed_ms(submitted)}
    start = time.perf_counter()
    rgb = decode_upload(data, engine.settings.max_pixels, "image")
    timing["decode"] = elapsed_ms(start)
    start = time.perf_counter()
    with engine.variant(options) as recognizer:
        faces = recognizer.predict_rgb([rgb], geometry=geometry or mesh, mesh=mesh)[0]
    timing["inference"] = elapsed_ms(start)
    engine.metrics.inference.observe(timing["inference"] / 1000)
    height, width = rgb.shape[:2]
    return {**frame_result(source, 0, None, faces, (width, height), engine.model_summary()), "timing_ms": timing}


@router.post("/faces", openapi_extra=IMAGE_BODY, responses={200: {"model": FacesOut}, **ERRORS})
async def faces(request: Request, params: Annotated[GeometryParams, Query()]) -> JSONResponse:
    """Faces (box, detector score, emotion, class probabilities, landmarks; with ``geometry=true`` head pose,
    gaze, eye and mouth openness and looking_at_camera) in one image, best first, as a frame result (the schema of
    ``predict --json``) naming the model, its sha256 prefix, backend and precision."""
    engine = get_engine(request)
    start = time.perf_counter()
    with engine.admit():
        buffer = io.BytesIO()
        settings = engine.settings
        upload = await receive_upload(
            request, buffer, "image", ("image/",), settings.max_upload_bytes, settings.body_timeout_s
        )
        given = validated(GeometryParams, params, upload.fields)
        options = given.options()
        engine.validate(options)
        read_ms = elapsed_ms(start)
        source = upload.filename or "upload"
        data, submitted = buffer.getvalue(), time.perf_counter()
        result = await engine.run(recognise_image, engine, data, options, submitted, source, given.geometry, given.mesh)
    engine.metrics.faces.labels("faces").inc(len(result["faces"]))
    result["timing_ms"] = {"read": read_ms, **result["timing_ms"], "total": elapsed_ms(start)}
    return JSONResponse(result)
