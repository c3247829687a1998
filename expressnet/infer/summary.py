"""``expressnet summarize ROWS --out DIR``: what ``expressnet predict`` found, for people to read.

Videos, per track: a timeline of the emotion probabilities over time (stacked, so each moment sums to 1; gaps
where the face is absent) above a strip of the dominant emotion per segment, the share of time per emotion (the
share of the track's frames whose top emotion it is) and the fraction of the video's time the face is present.
Still images, per folder: the emotion distribution of their faces as a chart, and how many images had none.
A Markdown page (``summary.md``) links the pictures; ``summary.json`` holds the numbers. The pictures need
matplotlib (the ``plots`` extra); without it the tables and numbers are written all the same.

Rows are read one line at a time (JSONL; CSV and Parquet are read whole); a video keeps one small record per
frame of each track, an image folder only counts.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, atomic_write_text
from .outputs import iter_results, label_color, read_rows

NICE_SEGMENTS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_TRACKS = 12  # timelines drawn per video (the longest tracks); the others are in the tables


PLOTS_HINT = "pip install 'expressnet[plots]'"


def pyplot():
    """``matplotlib.pyplot`` (Agg), or None when matplotlib is not installed (the ``plots`` extra): the summary
    is then written without its pictures."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    return plt


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a predict output, one at a time for JSONL; CSV values typed back (numbers, booleans, None)."""
    if path.suffix.lower() in (".jsonl", ".json"):
        yield from iter_results(path)  # frame results flattened, one line at a time
        return
    if path.suffix.lower() == ".csv":
        with path.open(newline="", errors="surrogateescape") as f:
            for row in csv.DictReader(f):
                yield {k: typed(k, v) for k, v in row.items()}
        return
    yield from read_rows(path)


def typed(key: str, value: str) -> Any:
    if value == "":
        return None
    if key in ("source", "emotion"):
        return value
    if key == "face_detected":
        return value == "True"
    number = float(value)
    return int(number) if key in ("frame", "face", "track_id", "x", "y", "w", "h") else number


@dataclass
class VideoTrack:
    times: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    emotions: list[str] = field(default_factory=list)


@dataclass
class Video:
    frames: set[int] = field(default_factory=set)  # every processed frame seen (with or without a face)
    times: dict[int, float] = field(default_factory=dict)
    tracks: dict[int, VideoTrack] = field(default_factory=lambda: defaultdict(VideoTrack))


@dataclass
class Folder:
    images: set[str] = field(default_factory=set)
    with_faces: set[str] = field(default_factory=set)
    emotions: Counter = field(default_factory=Counter)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "input"


def segment_length(duration: float) -> float:
    """A round segment length giving about ten segments."""
    target = duration / 10
    return next((s for s in NICE_SEGMENTS if s >= target), NICE_SEGMENTS[-1])


def frame_step(frames: list[int]) -> int:
    """The processing step (``--every``) from the frame numbers seen: their greatest common difference."""
    step = 0
    for a, b in itertools.pairwise(frames):
        step = math.gcd(step, b - a)
    return step or 1


def collect(path: Path) -> tuple[list[str], dict[str, Video], dict[str, Folder]]:
    classes: list[str] = []
    videos: dict[str, Video] = defaultdict(Video)
    folders: dict[str, Folder] = defaultdict(Folder)
    for row in iter_rows(path):
        if not classes:
            classes = [k[2:] for k in row if k.startswith("p_")]
        source = row["source"]
        if row.get("time_s") is not None:
            video = videos[source]
            video.frames.add(row["frame"])
            video.times[row["frame"]] = row["time_s"]
            if row.get("emotion") is not None and row.get("track_id") is not None:
                track = video.tracks[row["track_id"]]
                track.times.append(row["time_s"])
                track.frames.append(row["frame"])
                track.probabilities.append([row.get(f"p_{c}") or 0.0 for c in classes])
                track.emotions.append(row["emotion"])
            continue
        folder = folders[str(Path(source).parent)]
        folder.images.add(source)
        if row.get("emotion") is not None:
            folder.with_faces.add(source)
            folder.emotions[row["emotion"]] += 1
    return classes, videos, folders


def track_summary(track: VideoTrack, video: Video, classes: list[str], segment: float) -> dict[str, Any]:
    frames = sorted(video.frames)
    step = frame_step(frames)
    processed = (frames[-1] - frames[0]) // step + 1 if frames else 0
    shares = Counter(track.emotions)
    start = min(video.times.values())
    segments = []
    probabilities = np.array(track.probabilities)
    times = np.array(track.times)
    end = max(video.times.values())
    for n in range(int((end - start) // segment) + 1):
        lo, hi = start + n * segment, start + (n + 1) * segment
        inside = (times >= lo) & (times < hi)
        if inside.any():
            mean = probabilities[inside].mean(axis=0)
            top = classes[int(np.argmax(mean))]
            segments.append(
                {"start_s": round(lo, 3), "end_s": round(hi, 3), "emotion": top, "p": round(float(mean.max()), 3)}
            )
        else:
            segments.append({"start_s": round(lo, 3), "end_s": round(hi, 3), "emotion": None, "p": None})
    return {
        "frames": len(track.frames),
        "first_s": round(float(times.min()), 3),
        "last_s": round(float(times.max()), 3),
        "present": round(len(set(track.frames)) / processed, 4) if processed else 0.0,
        "share": {c: round(shares[c] / len(track.emotions), 4) for c in classes},
        "segments": segments,
    }


def plot_track(plt, track: VideoTrack, video: Video, classes: list[str], info: dict, title: str, path: Path) -> Path:
    """Stacked probabilities over time (white where the face is absent) and the dominant emotion per segment."""
    frames = sorted(video.frames)
    step = frame_step(frames)
    grid = np.arange(frames[0], frames[-1] + 1, step)
    fps = next((f / t for f, t in video.times.items() if t > 0), None)
    seconds = grid / fps if fps else np.array([video.times.get(int(f), np.nan) for f in grid])
    values = np.zeros((len(grid), len(classes)))
    where = {int(f): i for i, f in enumerate(grid)}
    for frame, p in zip(track.frames, track.probabilities):
        values[where[frame]] = p
    colors = [np.array(label_color(c)) / 255 for c in classes]
    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(11, 4.2), sharex=True, gridspec_kw={"height_ratios": [5, 1], "hspace": 0.08}
    )
    ax.stackplot(seconds, values.T, labels=classes, colors=colors, linewidth=0, step="mid")
    ax.set(ylim=(0, 1), ylabel="probability", xlim=(seconds[0], seconds[-1] if len(seconds) > 1 else seconds[0] + 1))
    present = f"face present {100 * info['present']:.0f} % of the time"
    top = sorted(info["share"].items(), key=lambda kv: -kv[1])[:3]
    shares = ", ".join(f"{c} {100 * s:.0f} %" for c, s in top if s > 0)
    ax.set_title(f"{title}: {present}; top emotion {shares}", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()  # listed top to bottom, as stacked
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    for seg in info["segments"]:
        if seg["emotion"] is None:
            continue
        color = np.array(label_color(seg["emotion"])) / 255
        strip.axvspan(seg["start_s"], seg["end_s"], color=color, alpha=0.9)
        middle = (seg["start_s"] + min(seg["end_s"], seconds[-1])) / 2
        strip.text(middle, 0.5, seg["emotion"], ha="center", va="center", fontsize=8)
    strip.set(yticks=[], xlabel="time (s)", ylabel="segment", ylim=(0, 1))
    strip.yaxis.label.set_size(8)
    fig.subplots_adjust(left=0.07, right=0.87, top=0.9, bottom=0.14)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def plot_folders(plt, folders: dict[str, Folder], classes: list[str], path: Path) -> Path:
    """The share of each emotion among the faces of each folder (a stacked horizontal bar per folder)."""
    names = sorted(folders)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * len(names)))
    left = np.zeros(len(names))
    totals = np.array([max(1, sum(folders[n].emotions.values())) for n in names])
    for c in classes:
        share = np.array([folders[n].emotions[c] for n in names]) / totals
        ax.barh(range(len(names)), share, left=left, color=np.array(label_color(c)) / 255, label=c)
        left += share
    labels = [f"{n or '.'} ({sum(folders[n].emotions.values())} faces)" for n in names]
    ax.set(yticks=range(len(names)), yticklabels=labels, xlim=(0, 1), xlabel="share of faces")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title("Emotions per folder", fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def summarize(rows_path: str | Path, out_dir: str | Path, segment_s: float | None = None) -> dict[str, Any]:
    """Write the pictures, ``summary.md`` and ``summary.json`` for a predict output (JSONL, CSV or a Parquet
    folder) into ``out_dir``; returns the numbers (also in ``summary.json``), with ``files`` written."""
    rows_path, out_dir = Path(rows_path), Path(out_dir)
    if not rows_path.exists():
        raise FileNotFoundError(f"{rows_path}: no such file")
    classes, videos, folders = collect(rows_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"rows": str(rows_path), "classes": classes, "videos": {}, "folders": {}}
    written: list[Path] = []
    md = [f"# Summary of `{rows_path.name}`", ""]
    plt = pyplot()
    if plt is None:
        report["pictures"] = f"not drawn: matplotlib is not installed ({PLOTS_HINT})"
        md += [f"Pictures are not drawn: matplotlib is not installed ({PLOTS_HINT}).", ""]
    for source, video in sorted(videos.items()):
        duration = max(video.times.values()) - min(video.times.values())
        segment = segment_s or segment_length(duration)
        tracks = sorted(video.tracks.items(), key=lambda kv: -len(kv[1].frames))
        entry = {"duration_s": round(duration, 3), "processed_frames": len(video.frames), "segment_s": segment}
        entry["tracks"] = {}
        md += [
            f"## {Path(source).name}",
            "",
            f"`{source}`: {duration:.1f} s, {len(video.frames)} processed frames, "
            f"{len(tracks)} track(s); segments of {segment:g} s.",
            "",
        ]
        if not tracks:
            md += ["No face was found.", ""]
        for n, (track_id, track) in enumerate(tracks):
            info = track_summary(track, video, classes, segment)
            entry["tracks"][str(track_id)] = info
            title = f"{Path(source).name}, track {track_id}"
            if n < MAX_TRACKS and plt is not None:
                picture = plot_track(
                    plt, track, video, classes, info, title, out_dir / f"{slug(Path(source).stem)}_track{track_id}.png"
                )
                written.append(picture)
                md += [f"### Track {track_id}", "", f"![{title}]({picture.name})", ""]
            else:
                md += [f"### Track {track_id}", ""]
            span = f"{info['first_s']:.1f} s to {info['last_s']:.1f} s"
            md += [f"Face present {100 * info['present']:.1f} % of the time ({span})."]
            md += ["", "| emotion | share of time |", "|---|---|"]
            md += [
                f"| {c} | {100 * s:.1f} % |" for c, s in sorted(info["share"].items(), key=lambda kv: -kv[1]) if s > 0
            ]
            md += ["", "| segment | dominant emotion | mean p |", "|---|---|---|"]
            for seg in info["segments"]:
                label = seg["emotion"] or "(no face)"
                p = "" if seg["p"] is None else f"{seg['p']:.2f}"
                md.append(f"| {seg['start_s']:.0f}–{seg['end_s']:.0f} s | {label} | {p} |")
            md.append("")
        report["videos"][source] = entry
    if folders:
        md += ["## Images per folder", ""]
        if plt is not None:
            chart = plot_folders(plt, folders, classes, out_dir / "folders.png")
            written.append(chart)
            md += [f"![Emotions per folder]({chart.name})", ""]
        md += ["| folder | images | with a face | faces | " + " | ".join(classes) + " |"]
        md += ["|---" * (4 + len(classes)) + "|"]
        for name, folder in sorted(folders.items()):
            faces = sum(folder.emotions.values())
            shares = [f"{100 * folder.emotions[c] / faces:.0f} %" if faces else "" for c in classes]
            md.append(
                f"| {name} | {len(folder.images)} | {len(folder.with_faces)} | {faces} | " + " | ".join(shares) + " |"
            )
            report["folders"][name] = {
                "images": len(folder.images),
                "with_faces": len(folder.with_faces),
                "emotions": dict(folder.emotions),
            }
        md.append("")
    md_path = atomic_write_text(out_dir / "summary.md", "\n".join(md))
    json_path = atomic_write_text(out_dir / "summary.json", json.dumps(report, indent=1) + "\n")
    report["files"] = [str(p) for p in (md_path, json_path, *written)]
    return report
