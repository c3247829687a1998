"""The service's settings: one frozen dataclass, built by ``expressnet serve`` or by tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Settings:
    """``model``: a shipped name or a checkpoint/ONNX file; ``backend``: auto, torch or onnx. ``workers``
    inference threads run jobs; at most ``workers + queue`` jobs are admitted at once (more: 503 with
    ``Retry-After``). Uploads over ``max_upload_mb`` and images over ``max_pixels`` get 413. ``api_key``: required
    of every request when set (``expressnet serve --api-key``, or its environment variable ``EXPRESSNET_API_KEY``).
    ``recognizer_factory`` (tests) builds the recognizer from the settings instead of the real one."""

    host: str = "127.0.0.1"
    port: int = 8000
    model: str = "default"
    backend: str = "auto"
    detector: str = "blazeface"
    workers: int = 2
    queue: int = 8
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000
    api_key: str | None = None
    max_video_frames: int = 20_000
    max_streams: int = 8
    body_timeout_s: float = 30.0
    retry_after_s: int = 1
    log_level: str = "info"
    recognizer_factory: Callable[[Settings], Any] | None = None

    def __post_init__(self) -> None:
        checks = {
            "workers": self.workers >= 1,
            "queue": self.queue >= 0,
            "max_upload_mb": self.max_upload_mb > 0,
            "max_pixels": self.max_pixels > 0,
            "max_video_frames": self.max_video_frames >= 1,
            "max_streams": self.max_streams >= 1,
            "body_timeout_s": self.body_timeout_s > 0,
            "port": 0 <= self.port <= 65535,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid serve settings: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be auto, torch or onnx, not {self.backend!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def capacity(self) -> int:
        """Inference jobs admitted at once: running plus waiting for a thread."""
        return self.workers + self.queue
