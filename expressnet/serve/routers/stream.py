"""``WS /v1/stream``: live frames. The client sends each frame as a binary message (a JPEG, or any image the
service accepts) and gets one JSON text message back per frame: ``{"type": "frame", ...}`` with the frame result
of ``predict --json`` (``source`` "stream", ``frame``, ``time_s``, ``image``, ``faces`` with ``track_id``,
``model``) and ``timing_ms``, or ``{"type": "error", "status", "detail"}`` for a frame
it could not take (413, 415, 422, 503 with ``retry_after``), after which the connection goes on. A text
message ``{"smooth": 0.5}`` (or ``null``) switches smoothing; the answer is ``{"type": "config", ...}``.
Each connection has its own tracks (ids, smoothing, blinks), which a smoothing switch keeps. Query parameters:
``smooth``, ``tiles``, ``min_score``, ``align``, ``geometry`` (each face's head pose, gaze, eye and mouth
openness, looking_at_camera, and ``blink`` at the frame its track ends one), ``mesh`` and, since browsers cannot
set headers on a WebSocket, ``api_key``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ...infer.outputs import frame_result
from ...infer.recognizer import FrameResult
from ...infer.sources import VideoFrame
from ...infer.tracking import FaceTracks
from ..deps import StreamParams, key_from_headers, key_matches, validation_messages
from ..engine import Engine
from ..errors import ApiError, error_body
from ..limits import decode_upload
from .faces import elapsed_ms

router = APIRouter(prefix="/v1", tags=["stream"])


class FrameFeed:
    """The frame iterator ``predict_frames`` pulls from: it yields the one frame put in before each step."""

    def __init__(self) -> None:
        self.frame: VideoFrame | None = None

    def __iter__(self) -> Iterator[VideoFrame]:
        return self

    def __next__(self) -> VideoFrame:
        frame, self.frame = self.frame, None
        if frame is None:
            raise StopIteration
        return frame


class StreamSession:
    """One connection: a recognizer variant, one :class:`FaceTracks` (track ids, smoothing, blinks) for all its
    frames, and a ``predict_frames`` generator on them fed frame by frame (a new one after an error)."""

    def __init__(self, engine: Engine, recognizer: Any, params: StreamParams) -> None:
        self.engine, self.recognizer = engine, recognizer
        self.tracks = FaceTracks(params.smooth)
        self.geometry, self.mesh = params.geometry, params.mesh
        self.feed = FrameFeed()
        self.start = time.monotonic()
        self.index = 0
        self.results = self.frames()

    def frames(self) -> Iterator[FrameResult]:
        return self.recognizer.predict_frames(self.feed, tracks=self.tracks, geometry=self.geometry, mesh=self.mesh)

    def set_smooth(self, smooth: float | None) -> None:
        """Smooth from the next frame on (track ids, blinks and smoothed probabilities kept)."""
        self.tracks.set_smooth(smooth)

    def process(self, data: bytes, submitted: float) -> dict[str, Any]:
        """Decode and recognise one frame on an inference thread."""
        timing = {"queue": elapsed_ms(submitted)}
        start = time.perf_counter()
        rgb = decode_upload(data, self.engine.settings.max_pixels, "frame")
        timing["decode"] = elapsed_ms(start)
        start = time.perf_counter()
        self.feed.frame = VideoFrame(self.index, time.monotonic() - self.start, rgb)
        try:
            result = next(self.results)
        except Exception:
            self.results = self.frames()  # the generator died with the error: a new one, same tracks
            raise
        timing["inference"] = elapsed_ms(start)
        self.index += 1
        height, width = rgb.shape[:2]
        model = self.engine.model_summary()
        frame = frame_result("stream", result.frame, result.time_s, result.faces, (width, height), model)
        return {"type": "frame", **frame, "timing_ms": timing}

    def close(self) -> None:
        self.results.close()


def error_message(status: int, detail: str, **extra: Any) -> str:
    return json.dumps({"type": "error", "status": status, "detail": detail, **extra})


async def deny(websocket: WebSocket, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Refuse the handshake with an HTTP status (or close 1008 where the server cannot send one)."""
    body = error_body(detail, websocket.scope.get("state", {}).get("request_id"))
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status, headers))
    else:
        await websocket.close(code=1008, reason=detail[:120])


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    engine: Engine = websocket.app.state.engine
    settings = engine.settings
    query = dict(websocket.query_params)
    if not key_matches(key_from_headers(websocket.headers) or query.pop("api_key", None), settings.api_key):
        await deny(websocket, 401, "missing or wrong API key: send X-API-Key, a bearer token or ?api_key=")
        return
    try:
        params = StreamParams.model_validate(query)
        engine.validate(params.options())
    except ValidationError as exc:
        await deny(websocket, 422, validation_messages(exc))
        return
    except ApiError as exc:
        await deny(websocket, exc.status, exc.message)
        return
    if not engine.ready or engine.streams >= settings.max_streams:
        retry = {"Retry-After": str(settings.retry_after_s)}
        await deny(websocket, 503, f"busy: {engine.streams} streams open (limit {settings.max_streams})", retry)
        return
    await websocket.accept()
    engine.streams += 1
    try:
        with engine.variant(params.options()) as recognizer:
            session = StreamSession(engine, recognizer, params)
            try:
                await serve_session(websocket, engine, session)
            finally:
                session.close()
    except WebSocketDisconnect:
        pass
    finally:
        engine.streams -= 1


async def serve_session(websocket: WebSocket, engine: Engine, session: StreamSession) -> None:
    limit = engine.settings.max_upload_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data, text = message.get("bytes"), message.get("text")
        if text is not None:
            await websocket.send_text(configure(session, text))
            continue
        if not data:
            await websocket.send_text(error_message(422, "empty frame"))
            continue
        if len(data) > limit:
            await websocket.send_text(error_message(413, f"frame of {len(data):,} bytes is over {limit:,} bytes"))
            continue
        try:
            with engine.admit():
                result = await engine.run(session.process, data, time.perf_counter())
        except ApiError as exc:
            extra = {"retry_after": engine.settings.retry_after_s} if exc.status == 503 else {}
            await websocket.send_text(error_message(exc.status, exc.message, **extra))
            continue
        engine.metrics.frames.labels("stream").inc()
        engine.metrics.faces.labels("stream").inc(len(result["faces"]))
        await websocket.send_text(json.dumps(result))


def configure(session: StreamSession, text: str) -> str:
    """Apply a control message (``{"smooth": a | null}``); the answer to send back."""
    try:
        control = json.loads(text)
    except ValueError:
        return error_message(400, 'a text message must be JSON, e.g. {"smooth": 0.5}')
    if not isinstance(control, dict) or set(control) - {"smooth"}:
        return error_message(422, 'unknown control message: the only setting is {"smooth": a or null}')
    try:
        smooth = StreamParams.model_validate({"smooth": control.get("smooth")}).smooth
    except ValidationError as exc:
        return error_message(422, validation_messages(exc))
    session.set_smooth(smooth)
    return json.dumps({"type": "config", "smooth": smooth})
