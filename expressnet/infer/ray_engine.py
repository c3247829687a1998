"""``expressnet predict --engine ray``: the same rows on a Ray cluster, built on Ray Data (the ``ray`` extra).

The driver enumerates the inputs (or, for ``s3://``/``gs://``/... URIs, Ray Data lists and reads the files
itself: ``read_binary_files``); ``map_batches`` runs a :class:`RecognizerWorker` (one :class:`Recognizer` per
worker, ``concurrency`` workers) over batches of inputs, and the driver takes the results back in input order
(``preserve_order``) and writes them like the local engine. Files named by path must be readable by every
worker (one machine, or a shared file system); remote URIs need only credentials for the bucket.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from .options import PredictOptions
from .outputs import Record, frame_result
from .recognizer import Recognizer
from .stream import StreamResult, run_stream

EXTRA_HINT = "pip install 'expressnet[ray]'"


def import_ray():
    """``ray`` with Ray Data, or an error naming the extra that brings it."""
    try:
        import ray
        import ray.data
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"--engine ray needs Ray Data: {EXTRA_HINT} ({exc.name} is missing)", name="ray"
        ) from exc
    return ray


def is_uri(source: str | Path) -> bool:
    return "://" in str(source)


class RecognizerWorker:
    """A Ray Data callable class: builds one :class:`Recognizer` from the run's :class:`PredictOptions` (backend
    included: the workers run the driver's backend, by the same fixed rule) and turns a batch of inputs (``index``
    and ``path``, or ``path`` and ``bytes`` read by Ray Data) into one result row per input: ``index``,
    ``source``, ``rows`` (the JSON list of its frame results), ``frames``, ``faces``, ``error``."""

    def __init__(self, options: PredictOptions):
        self.recognizer = Recognizer(**options.recognizer_kwargs())  # ``threads``: the classifier's (and torch's)
        self.model = self.recognizer.provenance()
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("index", "source", "rows", "frames", "faces", "error")}
        if "bytes" in batch:
            results = self.decoded(batch)
        else:
            paths = [Path(os.fsdecode(bytes(p))) for p in batch["path"]]
            chunk = replace(self.options.stream_options(), batch_size=max(1, len(paths)), workers=1)
            results = run_stream(self.recognizer, paths, chunk)
        offsets = [int(i) for i in batch["index"]] if "index" in batch else None
        for result in results:
            index = offsets[result.index] if offsets is not None else result.index
            if result.first:
                for k, v in (("index", index), ("source", result.source), ("rows", []), ("frames", 0), ("faces", 0)):
                    out[k].append(v)
                out["error"].append(None)
            if result.error is not None:
                out["error"][-1] = str(result.error)
                continue
            time_s = result.time_s if result.is_video else None
            out["rows"][-1].append(
                frame_result(result.source, result.frame, time_s, result.faces, result.size, self.model)
            )
            out["frames"][-1] += 1
            out["faces"][-1] += len(result.faces)
        out["rows"] = [json.dumps(rows) for rows in out["rows"]]
        return out

    def decoded(self, batch: dict[str, np.ndarray]) -> Iterator[StreamResult]:
        """Images given as bytes (``read_binary_files``): decoded here, classified in one batch."""
        names = [str(p) for p in batch["path"]]
        images = self.recognizer.predict_batch([bytes(b) for b in batch["bytes"]], return_exceptions=True)
        for n, (name, faces) in enumerate(zip(names, images)):
            if isinstance(faces, Exception):
                yield StreamResult(
                    n, name, None, 0, None, error=type(faces)(f"{name}: {str(faces).split(': ', 1)[-1]}")
                )
            else:
                yield StreamResult(n, name, None, 0, None, faces)


def ray_records(paths: Iterator[Path] | str, options: PredictOptions, start: int) -> Iterator[Record]:
    """Records of every input from the ``start``-th on (``paths``: local paths, or one URI that Ray Data lists),
    in input order, each committing the position after it; ``options.num_workers`` recognizer workers
    (default 1), ``options.batch_size`` inputs per batch. Joins the Ray instance running in this process, else
    ``ray.init(options.ray_address)`` (None: a local instance; "auto": the cluster this machine belongs to)."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    if isinstance(paths, str):
        dataset = ray.data.read_binary_files(paths, include_paths=True)  # resuming: the first ones are skipped
    else:
        items = [{"index": i, "path": os.fsencode(p)} for i, p in enumerate(paths) if i >= start]
        if not items:
            return
        dataset = ray.data.from_items(items)
    results = dataset.map_batches(
        RecognizerWorker,
        fn_constructor_kwargs={"options": options},
        batch_size=options.batch_size,
        concurrency=options.num_workers or 1,
        num_cpus=1,
        batch_format="numpy",
    )
    position = start if not isinstance(paths, str) else 0
    for row in results.iter_rows():
        index = int(row["index"]) if not isinstance(paths, str) else position
        position = index + 1
        if index < start:
            continue
        rows = json.loads(row["rows"])
        error = row["error"] if isinstance(row["error"], str) else None
        faces, frames = int(row["faces"]), int(row["frames"])
        yield Record(index, str(row["source"]), rows, frames, faces, error, True, {"input": index + 1, "video": None})
