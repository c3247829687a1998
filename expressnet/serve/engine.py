"""The inference engine behind the routes: the recognizer (loaded once, in the app's lifespan), a bounded
thread pool, admission of at most ``workers + queue`` jobs (then 503 with ``Retry-After``, never an unbounded
queue), and recognizer variants for per-request detector options.

A variant is a :class:`Recognizer` on the loaded one's classifier (thread-safe, shared) with its own detector;
one job uses a variant at a time, so jobs detect faces in parallel (a recognizer runs its detector under a
lock, as a TFLite interpreter is not re-entrant).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..hub import records
from ..infer.recognizer import Recognizer
from .errors import ApiError
from .metrics import Metrics
from .settings import Settings

T = TypeVar("T")
MAX_VARIANT_KEYS = 16  # distinct detector option sets kept warm


@dataclass(frozen=True)
class DetectOptions:
    """Per-request detector options: BlazeFace ``tiles`` ("auto": the detector's own choice from the image size,
    as ``predict --tiles auto``; a number forces T x T tiles, 1 one pass), ``min_score`` (None: the detector's
    default) and eye ``align``ment."""

    tiles: int | str = "auto"
    min_score: float | None = None
    align: bool = False


def build_recognizer(settings: Settings) -> Recognizer:
    """The real recognizer: the settings' model, detector and classifier backend."""
    model = None if settings.model == "default" else settings.model
    return Recognizer(model, settings.detector, backend=settings.backend)


class Slot:
    """One admitted job; ``release`` is idempotent."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.active = engine, True

    def release(self) -> None:
        if self.active:
            self.active = False
            self.engine.release_slot()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.recognizer: Any = None
        self.executor: ThreadPoolExecutor | None = None
        self.in_flight = 0
        self.streams = 0
        self.loaded_s: float | None = None
        self.error: str | None = None
        self._variants: OrderedDict[DetectOptions, list[Any]] = OrderedDict()
        self._variants_lock = threading.Lock()
        self._summary: dict[str, Any] | None = None

    # lifecycle
    def load(self) -> None:
        start = time.perf_counter()
        factory: Callable[[Settings], Any] = self.settings.recognizer_factory or build_recognizer
        self.recognizer = factory(self.settings)
        self._variants[DetectOptions()] = [self.recognizer]
        self.executor = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="expressnet-infer")
        self.loaded_s = time.perf_counter() - start

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    @property
    def ready(self) -> bool:
        return self.recognizer is not None and self.executor is not None

    # admission
    def admit(self) -> Slot:
        """A slot for one job, or 503 with Retry-After when ``capacity`` jobs are in flight (event loop only)."""
        if not self.ready:
            raise ApiError(503, "the model is not loaded yet", {"Retry-After": str(self.settings.retry_after_s)})
        if self.in_flight >= self.settings.capacity:
            self.metrics.rejected.inc()
            raise ApiError(
                503,
                f"busy: {self.in_flight} inference jobs in flight (capacity {self.settings.capacity}); retry shortly",
                {"Retry-After": str(self.settings.retry_after_s)},
            )
        self.in_flight += 1
        self.metrics.jobs.set(self.in_flight)
        return Slot(self)

    def release_slot(self) -> None:
        self.in_flight -= 1
        self.metrics.jobs.set(self.in_flight)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on an inference thread."""
        if self.executor is None:
            raise ApiError(503, "the service is shutting down", {"Retry-After": str(self.settings.retry_after_s)})
        call = functools.partial(contextvars.copy_context().run, fn, *args)  # keeps the request id for logs
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    # recognizer variants
    def validate(self, options: DetectOptions) -> None:
        detector = self.settings.detector
        if options.tiles != "auto" and detector != "blazeface":
            raise ApiError(422, f"tiles needs the blazeface detector (this service runs {detector!r})")
        if options.align and detector != "blazeface":
            raise ApiError(422, f"align needs eye landmarks: the blazeface detector (this service runs {detector!r})")
        if options.min_score is not None and detector == "none":
            raise ApiError(422, "min_score needs a face detector (this service runs 'none': images are face crops)")

    @contextlib.contextmanager
    def variant(self, options: DetectOptions) -> Iterator[Any]:
        """A recognizer with these detector options, for this job only."""
        self.validate(options)
        with self._variants_lock:
            free = self._variants.get(options)
            recognizer = free.pop() if free else None
        if recognizer is None:
            recognizer = self._build(options)
        try:
            yield recognizer
        finally:
            with self._variants_lock:
                free = self._variants.setdefault(options, [])
                self._variants.move_to_end(options)
                if len(free) < self.settings.capacity + self.settings.max_streams:
                    free.append(recognizer)
                while len(self._variants) > MAX_VARIANT_KEYS:
                    self._variants.popitem(last=False)

    def _build(self, options: DetectOptions) -> Any:
        detector_options: dict[str, Any] = {}
        if options.min_score is not None:
            detector_options["min_score"] = options.min_score
        if options.tiles != "auto":
            detector_options["tiles"] = options.tiles
        base = self.recognizer
        return type(base)(
            base.classifier, self.settings.detector, detector_options=detector_options, align=options.align
        )

    # description
    def model_info(self) -> dict[str, Any]:
        r = self.recognizer
        return {**r.classifier.describe(), "detector": repr(r.detector)}

    def model_summary(self) -> dict[str, Any]:
        """The model each result names (the classifier's provenance: name, file, sha256 prefix, backend, precision:
        the ``model`` of ``predict --json``'s lines); ``model_info`` has more."""
        if self._summary is None:
            self._summary = self.recognizer.provenance()
        return self._summary

    def models(self) -> list[dict[str, Any]]:
        """The shipped models (their records' main facts)."""
        return [
            {"name": r.name, "title": r.title, "file": r.inference, "backend": r.backend, "precision": r.precision}
            for r in records().values()
        ]
