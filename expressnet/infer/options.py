"""The options of ``expressnet predict`` as one frozen dataclass, shared by the command line, the Python API
(:func:`~expressnet.infer.predict.run_predict`) and the Ray engine (whose workers build their recognizers from
it, so every worker runs what the driver would)::

    from expressnet.infer.options import PredictOptions
    from expressnet.infer.predict import run_predict
    summary = run_predict("photos/", options=PredictOptions(jsonl="rows.jsonl", geometry=True, recursive=True))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stream import BATCH_SIZE, WORKERS, StreamOptions

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class PredictOptions:
    """What to run, what to read, what to write and how (see ``expressnet predict --help``).

    The recognizer: ``model`` (a shipped name, "default", a checkpoint or ``.onnx`` file), ``backend``,
    ``detector`` and its ``detector_options`` (BlazeFace: ``model``, ``min_score``, ``tiles``, ``retry``,
    ``no_face``), ``align``, ``threads``, ``geometry`` (head pose, gaze, eye and mouth openness, looking at the
    camera; in videos blinks per track) and ``mesh`` (the 468 face-mesh points in the JSON lines; implies
    ``geometry``). Reading: ``recursive`` folders, every ``every``-th video frame, ``smooth`` (each track's
    probabilities, 0 < alpha <= 1), at most ``max_frames`` per video. Writing: ``jsonl``, ``csv`` (either may be
    ``-``: standard output), ``parquet`` (a folder of parts), ``annotate_dir`` (annotated images and videos),
    ``all_frames`` (a flat row for frames without a face), ``resume`` an interrupted run, ``overwrite``.
    Running: ``engine`` "local" (``workers`` threads) or "ray" (``ray_address``, ``num_workers``),
    ``batch_size`` images or frames classified at a time, ``progress`` bars or lines."""

    model: str = "default"
    backend: str = "auto"
    detector: str = "blazeface"
    detector_options: dict[str, Any] = field(default_factory=dict)
    align: bool = False
    threads: int | None = None
    geometry: bool = False
    mesh: bool = False
    recursive: bool = False
    every: int = 1
    smooth: float | None = None
    max_frames: int | None = None
    jsonl: str | Path | None = None
    csv: str | Path | None = None
    parquet: str | Path | None = None
    annotate_dir: str | Path | None = None
    all_frames: bool = False
    resume: bool = False
    overwrite: bool = False
    engine: str = "local"
    ray_address: str | None = None
    num_workers: int | None = None
    batch_size: int = BATCH_SIZE
    workers: int = WORKERS
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be local or ray, got {self.engine!r}")
        self.stream_options()  # checks the reading and batching settings

    @property
    def measures_geometry(self) -> bool:
        return self.geometry or self.mesh

    def recognizer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~expressnet.infer.recognizer.Recognizer` these options describe."""
        return {
            "model": self.model,
            "detector": self.detector,
            "detector_options": dict(self.detector_options),
            "align": self.align,
            "backend": self.backend,
            "threads": self.threads,
            "geometry": self.measures_geometry,
            "mesh": self.mesh,
        }

    def stream_options(self, keep_images: bool = False) -> StreamOptions:
        return StreamOptions(self.every, self.smooth, self.max_frames, self.batch_size, self.workers, keep_images)

    def settings(self, source: str | Path) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (its progress journal holds them): the source
        and every option that changes the results (not where they go, nor the threads or progress)."""
        detector_options = {k: v for k, v in self.detector_options.items() if k != "threads"}
        return {
            "source": str(source),
            "recursive": self.recursive,
            "every": self.every,
            "smooth": self.smooth,
            "max_frames": self.max_frames,
            "all_frames": self.all_frames,
            "model": self.model,
            "detector": self.detector,
            "detector_options": detector_options,
            "align": self.align,
            "batch_size": self.batch_size,
            "geometry": self.measures_geometry,
            "mesh": self.mesh,
        }
