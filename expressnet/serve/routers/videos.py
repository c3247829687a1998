"""``POST /v1/videos``: a video upload -> one NDJSON line per processed frame as it is computed, or CSV rows
(``Accept: text/csv``, the CLI's columns). The bytes go to a temporary file (OpenCV reads paths) that is
removed however the request ends: success, error, or the client going away mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...data.base import DataError
from ...infer.outputs import columns, flat_rows, frame_result
from ...infer.recognizer import FrameResult
from ...infer.sources import VIDEO_SUFFIXES, VideoSource
from ..deps import VideoParams, get_engine, require_api_key, validated
from ..engine import Engine, Slot
from ..errors import ApiError
from ..limits import check_pixels, receive_upload
from .faces import ERRORS

log = logging.getLogger("expressnet.serve")
router = APIRouter(prefix="/v1", tags=["videos"], dependencies=[Depends(require_api_key)])
SUFFIX_BY_TYPE = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "video/x-msvideo": ".avi",
    "video/x-matroska": ".mkv",
    "video/mpeg": ".mpg",
}
VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "description": "A video file: a multipart `video` field, or the raw file as video/* or "
        "application/octet-stream.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {"video": {"type": "string", "format": "binary"}},
                }
            },
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
RESPONSES = {
    200: {
        "description": "One frame result per processed frame and line (the schema of `predict --json`: `source`, "
        "`frame`, `time_s`, `image`, `faces` with `track_id`, `model`), or CSV rows with `Accept: text/csv`. With "
        "`geometry=true` each face has `pose`, `gaze`, `eyes`, `mouth_openness`, `looking_at_camera` (and `mesh` "
        "with `mesh=true`), and `blink` at the frame its track ends a blink; CSV adds the geometry columns and "
        "`blink_s`.",
        "content": {"application/x-ndjson": {}, "text/csv": {}},
    },
    **ERRORS,
}


class CleanupStreamingResponse(StreamingResponse):
    """A streaming response that always awaits ``cleanup`` once it ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], cleanup: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self.cleanup())


def upload_suffix(filename: str | None, content_type: str) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in VIDEO_SUFFIXES else SUFFIX_BY_TYPE.get(content_type, ".mp4")


class VideoJob:
    """One admitted video: its temporary file, recognizer variant and frame generator, closed exactly once."""

    def __init__(self, engine: Engine, slot: Slot, path: Path, name: str) -> None:
        self.engine, self.slot, self.path, self.name = engine, slot, path, name
        self.variant: contextlib.ExitStack = contextlib.ExitStack()
        self.results: Iterator[FrameResult] | None = None
        self.source: VideoSource | None = None
        self.pending: asyncio.Future | None = None
        self.first: FrameResult | None = None
        self.failed = False
        self.closed = False
        self.geometry = False
        self.model = engine.model_summary()

    async def start(self, params: VideoParams) -> None:
        """Open the video and compute its first frame, so that bad input is answered with a status."""
        engine = self.engine
        recognizer = self.variant.enter_context(engine.variant(params.options()))
        max_frames = min(params.max_frames or engine.settings.max_video_frames, engine.settings.max_video_frames)
        try:
            self.source = await engine.run(VideoSource, self.path, params.every, max_frames)
        except DataError:
            raise ApiError(415, "video: not a video file, or an unsupported container or codec") from None
        check_pixels(*self.source.size, engine.settings.max_pixels, "video")
        self.geometry = params.geometry or params.mesh
        self.results = self.frames(recognizer, params)
        try:
            self.first = await self.step()
        except DataError:
            raise ApiError(422, "video: no decodable frame") from None

    def frames(self, recognizer: Any, params: VideoParams) -> Iterator[FrameResult]:
        with self.source:
            yield from recognizer.predict_frames(self.source, params.smooth, geometry=params.geometry, mesh=params.mesh)

    def _next(self) -> FrameResult | None:
        return next(self.results, None)

    async def step(self) -> FrameResult | None:
        self.pending = asyncio.ensure_future(self.engine.run(self._next))
        result = await asyncio.shield(self.pending)
        if result is not None:
            self.engine.metrics.frames.labels("videos").inc()
            self.engine.metrics.faces.labels("videos").inc(len(result.faces))
        return result

    async def computed(self) -> AsyncIterator[FrameResult]:
        """The frames as computed; a failure after the first ends the stream (the status is already sent)."""
        result = self.first
        while result is not None:
            yield result
            try:
                result = await self.step()
            except Exception:
                log.exception("video %s failed mid-stream", self.name)
                self.failed = True
                return

    def frame_result(self, result: FrameResult) -> dict[str, Any]:
        """A frame as ``predict --json`` writes it (one schema)."""
        return frame_result(self.name, result.frame, result.time_s, result.faces, self.source.size, self.model)

    async def ndjson(self) -> AsyncIterator[str]:
        async for result in self.computed():
            yield json.dumps(self.frame_result(result)) + "\n"
        if self.failed:
            yield json.dumps({"error": "processing failed after the last frame sent"}) + "\n"

    async def csv(self, class_names: tuple[str, ...]) -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns(class_names, self.geometry), lineterminator="\n")
        writer.writeheader()
        async for result in self.computed():
            for row in flat_rows(self.frame_result(result)):
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if buffer.getvalue():
            yield buffer.getvalue()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.pending is not None and not self.pending.done():
                with contextlib.suppress(Exception):
                    await self.pending  # a frame still running on an inference thread
            if self.results is not None:
                self.results.close()
            if self.source is not None:
                self.source.close()
            self.variant.close()
        finally:
            self.slot.release()
            self.path.unlink(missing_ok=True)


@router.post("/videos", openapi_extra=VIDEO_BODY, responses=RESPONSES, response_class=StreamingResponse)
async def videos(request: Request, params: Annotated[VideoParams, Query()]) -> StreamingResponse:
    """Faces with track ids in every ``every``-th frame of an uploaded video, streamed as computed; with
    ``geometry=true`` each face's head pose, gaze, eye and mouth openness and looking_at_camera, and each track's
    blinks (as ``predict --geometry``)."""
    engine = get_engine(request)
    settings = engine.settings
    slot = engine.admit()
    fd, name = tempfile.mkstemp(prefix="expressnet-upload-", suffix=".video")
    job = VideoJob(engine, slot, Path(name), "upload")
    try:
        with os.fdopen(fd, "wb") as sink:
            upload = await receive_upload(
                request,
                sink,
                "video",
                ("video/", "application/octet-stream"),
                settings.max_upload_bytes,
                settings.body_timeout_s,
            )
        job.name = upload.filename or "upload"
        params = validated(VideoParams, params, upload.fields)
        suffix = upload_suffix(upload.filename, upload.content_type)
        job.path = job.path.rename(job.path.with_suffix(suffix))
        await job.start(params)
    except BaseException:
        await job.close()
        raise
    headers = {"X-Video-FPS": f"{job.source.fps:g}", "X-Video-Size": "x".join(map(str, job.source.size))}
    if job.source.expected_frames is not None:
        headers["X-Expected-Frames"] = str(job.source.expected_frames)
    if "text/csv" in request.headers.get("accept", ""):
        body, media_type = job.csv(engine.recognizer.class_names), "text/csv; charset=utf-8"
    else:
        body, media_type = job.ndjson(), "application/x-ndjson"
    return CleanupStreamingResponse(body, job.close, media_type=media_type, headers=headers)
