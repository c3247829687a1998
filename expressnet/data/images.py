"""Image decoding and the colour/size conversions shared by datasets and inference.

Everything returns uint8 arrays: RGB (H, W, 3) or gray (H, W). Decoding follows EXIF orientation and
handles gray, gray+alpha, palette, RGBA, CMYK, 16-bit and float images. Failures raise
:class:`~expressnet.data.base.DataError` naming the file.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .base import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm")
INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image -> RGB uint8, after EXIF rotation; alpha is composited onto white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def array_to_rgb(img: np.ndarray, color: str = "rgb") -> np.ndarray:
    """An image array -> RGB uint8 (H, W, 3). ``img`` is gray (H, W) or (H, W, 1), or colour (H, W, 3|4)
    in ``color`` order "rgb" (RGB/RGBA) or "bgr" (BGR/BGRA, as OpenCV); uint8, uint16, bool or float
    (in [0, 1] when its maximum is <= 1, else [0, 255]). Alpha is composited onto white."""
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or 0 in img.shape:
        raise ValueError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {img.shape}")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        arr = img.astype(np.float64)
        top = 1.0 if np.nanmax(arr) <= 1.0 else 255.0
        img = np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 3 and color == "bgr":
        img = img[..., [2, 1, 0, 3][: img.shape[2]]]
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    return pil_to_rgb(Image.fromarray(np.ascontiguousarray(img)))


# what PIL's decoders raise on malformed data (besides OSError); anything else is a bug and propagates
DECODE_ERRORS = (ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, ZeroDivisionError)


def display_name(path: str | Path) -> str:
    """A path as printable text: bytes that are not UTF-8 (``os.fsdecode`` surrogates) as ``\\xNN``."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as RGB uint8 (H, W, 3), upright by its EXIF orientation (first frame of an
    animation or multi-page file); ``DataError`` naming the file if it cannot be read."""
    name = display_name(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise DataError(f"{name}: file not found") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{name}: is a directory, not an image") from exc
    except PermissionError as exc:
        raise DataError(f"{name}: permission denied") from exc
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from exc
    return decode_image_bytes(data, name)


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (a file, an upload, an archive member) as RGB uint8 (H, W, 3), upright by
    EXIF; ``DataError`` naming ``name`` for empty, truncated, unknown, oversized or otherwise bad data."""
    if not data:
        raise DataError(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return pil_to_rgb(img)
    except UnidentifiedImageError as exc:
        raise DataError(f"{name}: not an image file (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name}: image too large to decode safely ({exc})") from exc
    except (OSError, *DECODE_ERRORS) as exc:
        raise DataError(f"{name}: unreadable image ({exc})") from exc


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Gray (H, W) or RGB (H, W, 3) -> (H, W) for ``channels=1`` or (H, W, 3) for ``channels=3``."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if channels == 1:
        return img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    if channels == 3:
        return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def resize(img: np.ndarray, size: int, interpolation: str = "linear") -> np.ndarray:
    """Resize to size x size (no-op when already that size)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=INTERPOLATION[interpolation])


def to_model_input(img: np.ndarray, size: int, channels: int, interpolation: str = "linear") -> np.ndarray:
    """A face crop -> uint8 (channels, size, size), the layout models and datasets exchange."""
    out = resize(to_channels(img, channels), size, interpolation)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
