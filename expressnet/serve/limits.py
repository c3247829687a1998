"""Bounded uploads: the body is refused from its ``Content-Length`` or counted while it streams (413 past the
limit, 408 when too slow), multipart bodies are parsed as they arrive into memory (images) or a temporary file
(videos), and an image's pixel count is read from its header before anything is decoded."""

from __future__ import annotations

import asyncio
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..data.base import DataError
from ..data.images import decode_image_bytes
from .errors import ApiError

# Formats the service decodes (PIL names). Others PIL knows (EPS runs Ghostscript, PSD, ICO, ...) get 415.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
MAX_FORM_FIELD_BYTES = 1024  # a non-file multipart field (tiles=3): small
MAX_FORM_FIELDS = 16


@dataclass
class Upload:
    """What :func:`receive_upload` read: the payload's content type, its size and the small form fields."""

    content_type: str
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None


def content_length(request: Request, limit: int) -> int | None:
    """The declared body size; 413 when over ``limit`` (before reading anything), 400 when not a number."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ApiError(400, f"invalid Content-Length header {value[:40]!r}")
    size = int(value)
    if size > limit:
        raise ApiError(413, f"request body of {size:,} bytes is over the limit of {limit:,} bytes")
    return size


async def body_chunks(request: Request, limit: int, timeout_s: float):
    """The body's chunks, counted: 413 as soon as more than ``limit`` bytes arrive, 408 past ``timeout_s``."""
    content_length(request, limit)
    deadline = time.monotonic() + timeout_s
    received = 0
    stream = request.stream().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(remaining, 0.001))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s") from None
        except ClientDisconnect:
            raise ApiError(400, "the client disconnected before the body was complete") from None
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"request body is over the limit of {limit:,} bytes")
        if chunk:
            yield chunk


class _PartSink:
    """Multipart callbacks: the ``file_field`` part's bytes go to ``sink``, small fields to ``fields``."""

    def __init__(self, file_field: str, sink: BinaryIO, upload: Upload) -> None:
        self.file_field, self.sink, self.upload = file_field, sink, upload
        self.headers: dict[str, bytes] = {}
        self.name: str | None = None
        self.value = bytearray()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.found = False
        self.skip = False
        self.ended = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.headers, self.name, self.value = {}, None, bytearray()

    def header_end(self) -> None:
        self.headers[bytes(self.header_field).lower().decode("latin-1")] = bytes(self.header_value)
        self.header_field, self.header_value = bytearray(), bytearray()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise ApiError(400, "malformed multipart body: a part has no Content-Disposition name")
        self.name = name.decode("utf-8", "replace")
        self.skip = False
        if self.name != self.file_field and b"filename" in options:
            self.skip = True  # another file: ignored (its bytes still count towards the body limit)
        elif self.name == self.file_field:
            if self.found:
                raise ApiError(422, f"more than one {self.file_field!r} field")
            self.found = True
            self.upload.content_type = self.headers.get("content-type", b"").decode("latin-1").strip().lower()
            filename = options.get(b"filename")
            self.upload.filename = None if filename is None else filename.decode("utf-8", "replace")[:200]
        elif len(self.upload.fields) >= MAX_FORM_FIELDS:
            raise ApiError(422, f"more than {MAX_FORM_FIELDS} form fields")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.skip:
            return
        if self.name == self.file_field:
            self.sink.write(data[start:end])
            self.upload.size += end - start
        else:
            self.value.extend(data[start:end])
            if len(self.value) > MAX_FORM_FIELD_BYTES:
                raise ApiError(422, f"form field {self.name!r} is over {MAX_FORM_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self.name is not None and self.name != self.file_field and not self.skip:
            self.upload.fields[self.name] = self.value.decode("utf-8", "replace")

    def end(self) -> None:
        self.ended = True


async def receive_upload(
    request: Request, sink: BinaryIO, file_field: str, accepted: tuple[str, ...], limit: int, timeout_s: float
) -> Upload:
    """Stream the request's payload into ``sink``: a raw body whose content type starts with one of
    ``accepted`` ("image/"), or the ``file_field`` part of a multipart/form-data body (its other small fields
    are returned in ``Upload.fields``). 413/408 from :func:`body_chunks`; 415 for another content type; 400 for
    a malformed or truncated multipart body; 422 when the payload is missing or empty."""
    header = request.headers.get("content-type", "")
    media_type, options = parse_options_header(header)
    media = media_type.decode("latin-1").lower()
    upload = Upload(media)
    if media == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(400, "malformed multipart body: the Content-Type has no boundary")
        parts = _PartSink(file_field, sink, upload)
        try:
            parser = MultipartParser(boundary, parts.callbacks())
            async for chunk in body_chunks(request, limit, timeout_s):
                parser.write(chunk)
            parser.finalize()
        except ApiError:
            raise
        except Exception as exc:  # python-multipart's MultipartParseError and friends
            raise ApiError(400, f"malformed multipart body ({exc})") from None
        if not parts.ended:
            raise ApiError(400, "malformed multipart body: truncated (no closing boundary)")
        if not parts.found:
            raise ApiError(422, f"multipart field {file_field!r} is missing")
    elif media.startswith(accepted):
        async for chunk in body_chunks(request, limit, timeout_s):
            sink.write(chunk)
            upload.size += len(chunk)
    else:
        kinds = " or ".join(f"{a}*" for a in accepted)
        raise ApiError(
            415,
            f"unsupported Content-Type {header[:80]!r}: send multipart/form-data with a {file_field!r} field, "
            f"or the raw file as {kinds}",
        )
    if upload.size == 0:
        raise ApiError(422, f"the {file_field} upload is empty")
    return upload


def decode_upload(data: bytes, max_pixels: int, name: str = "upload") -> np.ndarray:
    """An uploaded image as RGB uint8. Its size is read from the header first: 413 over ``max_pixels``
    (decompression bombs never decode); 415 when it is not an image in :data:`IMAGE_FORMATS`; 422 when it
    is one but cannot be decoded (truncated, corrupt)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                width, height = img.size
    except UnidentifiedImageError:
        accepted = ", ".join(IMAGE_FORMATS)
        raise ApiError(415, f"{name}: not an image, or a format the service does not accept ({accepted})") from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{name}: over the limit of {max_pixels:,} pixels ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ApiError(422, f"{name}: unreadable image header ({exc})") from None
    check_pixels(width, height, max_pixels, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return decode_image_bytes(data, name)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"{name}: over the limit of {max_pixels:,} pixels ({exc})") from None
    except DataError as exc:
        raise ApiError(422, str(exc)) from None


def check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise ApiError(
            413, f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} pixels"
        )
