"""``expressnet summarize ROWS --out DIR``: what ``expressnet predict`` found, for people to read.

Videos, per track: a timeline of the emotion probabilities over time (stacked, so each moment sums to 1; gaps
where the face is absent) above a strip of the dominant emotion per segment, the share of time per emotion (the
share of the track's frames whose top emotion it is) and the fraction of the video's time the face is present.
When the rows carry face geometry (``predict --geometry``), beside them: a head-pose timeline (yaw, pitch, roll
in degrees) and an attention strip (looking at the camera or not, with the blinks marked), the share of time
looking at the camera (of the frames whose face has geometry), the mean pose, and the blinks with their rate per
minute of the time the eyes were measured (the rule of :class:`~expressnet.faces.blinks.BlinkCounter`); per
segment the share looking at the camera and the mean yaw and pitch.
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
from .outputs import MODEL_COLUMNS, iter_results, label_color, read_rows

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
    if key in ("source", "emotion", *MODEL_COLUMNS):
        return value
    if key in ("face_detected", "looking_at_camera"):
        return value == "True"
    number = float(value)
    return int(number) if key in ("frame", "face", "track_id", "x", "y", "w", "h") else number


@dataclass
class VideoTrack:
    times: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    emotions: list[str] = field(default_factory=list)
    pose: list[tuple[float, float, float] | None] = field(default_factory=list)  # yaw, pitch, roll (geometry)
    looking: list[bool | None] = field(default_factory=list)
    eye_times: list[float] = field(default_factory=list)  # when the eyes' openness was measured
    blinks: list[tuple[float, float]] = field(default_factory=list)  # (end time, duration) of each blink

    def add_geometry(self, row: dict[str, Any]) -> None:
        """The geometry columns of one of this track's rows (None where the face had no geometry)."""
        angles = (row.get("yaw"), row.get("pitch"), row.get("roll"))
        self.pose.append(None if None in angles else angles)
        self.looking.append(row.get("looking_at_camera"))
        if row.get("eye_open_right") is not None or row.get("eye_open_left") is not None:
            self.eye_times.append(row["time_s"])
        if row.get("blink_s") is not None:
            self.blinks.append((row["time_s"], row["blink_s"]))

    @property
    def has_geometry(self) -> bool:
        return any(p is not None for p in self.pose)


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
                track.add_geometry(row)
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
    info = {
        "frames": len(track.frames),
        "first_s": round(float(times.min()), 3),
        "last_s": round(float(times.max()), 3),
        "present": round(len(set(track.frames)) / processed, 4) if processed else 0.0,
        "share": {c: round(shares[c] / len(track.emotions), 4) for c in classes},
        "segments": segments,
    }
    if track.has_geometry:
        info["attention"] = attention_summary(track)
        add_segment_attention(track, segments)
    return info


def attention_summary(track: VideoTrack) -> dict[str, Any]:
    """Head pose and attention of one track: the share of its frames with geometry looking at the camera, the mean
    yaw, pitch and roll (degrees), the blinks (end times) and their rate per minute of the time the eyes were
    measured (from the first to the last such frame, as :class:`~expressnet.faces.blinks.BlinkCounter`)."""
    looked = [v for v in track.looking if v is not None]
    pose = np.array([p for p in track.pose if p is not None])
    observed = max(track.eye_times) - min(track.eye_times) if track.eye_times else 0.0
    rate = 60.0 * len(track.blinks) / observed if observed > 0 else None
    return {
        "frames_with_geometry": len(pose),
        "looking_at_camera": round(sum(looked) / len(looked), 4) if looked else None,
        "mean_pose": {k: round(float(v), 2) for k, v in zip(("yaw", "pitch", "roll"), pose.mean(axis=0))},
        "blinks": len(track.blinks),
        "blink_rate_per_min": None if rate is None else round(rate, 2),
        "blink_times_s": [round(t, 3) for t, _ in track.blinks],
    }


def add_segment_attention(track: VideoTrack, segments: list[dict[str, Any]]) -> None:
    """Per segment: the share of frames looking at the camera and the mean yaw and pitch (None without geometry)."""
    times = np.array(track.times)
    pose = np.array([p if p is not None else (np.nan,) * 3 for p in track.pose], dtype=np.float64)
    looking = np.array([np.nan if v is None else float(v) for v in track.looking])
    for seg in segments:
        inside = (times >= seg["start_s"]) & (times < seg["end_s"])
        seen = inside & ~np.isnan(pose[:, 0])
        look = inside & ~np.isnan(looking)
        seg["looking"] = round(float(looking[look].mean()), 3) if look.any() else None
        seg["yaw"] = round(float(pose[seen, 0].mean()), 1) if seen.any() else None
        seg["pitch"] = round(float(pose[seen, 1].mean()), 1) if seen.any() else None


def time_grid(video: Video) -> tuple[np.ndarray, np.ndarray]:
    """Every processed frame number of a video (its step from the frames seen) and its time in seconds."""
    frames = sorted(video.frames)
    grid = np.arange(frames[0], frames[-1] + 1, frame_step(frames))
    fps = next((f / t for f, t in video.times.items() if t > 0), None)
    seconds = grid / fps if fps else np.array([video.times.get(int(f), np.nan) for f in grid])
    return grid, seconds


def on_grid(grid: np.ndarray, frames: list[int], values: list, width: int) -> np.ndarray:
    """``values`` (one per frame of ``frames``, None where missing) on the ``grid``: NaN where there is none."""
    out = np.full((len(grid), width), np.nan)
    where = {int(f): i for i, f in enumerate(grid)}
    for frame, value in zip(frames, values):
        if value is not None:
            out[where[frame]] = value
    return out


def plot_track(plt, track: VideoTrack, video: Video, classes: list[str], info: dict, title: str, path: Path) -> Path:
    """Stacked probabilities over time (white where the face is absent) and the dominant emotion per segment; with
    geometry, the head pose over time and the attention strip (looking at the camera, blinks) below."""
    grid, seconds = time_grid(video)
    heights = [5, 1, 3, 1] if track.has_geometry else [5, 1]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(11, 1.2 + 0.6 * sum(heights)),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
    )
    values = np.nan_to_num(on_grid(grid, track.frames, track.probabilities, len(classes)))
    ax = axes[0]
    colors = [np.array(label_color(c)) / 255 for c in classes]
    ax.stackplot(seconds, values.T, labels=classes, colors=colors, linewidth=0, step="mid")
    ax.set(ylim=(0, 1), ylabel="probability", xlim=(seconds[0], seconds[-1] if len(seconds) > 1 else seconds[0] + 1))
    present = f"face present {100 * info['present']:.0f} % of the time"
    top = sorted(info["share"].items(), key=lambda kv: -kv[1])[:3]
    shares = ", ".join(f"{c} {100 * s:.0f} %" for c, s in top if s > 0)
    ax.set_title(f"{title}: {present}; top emotion {shares}", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()  # listed top to bottom, as stacked
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    draw_segments(axes[1], info["segments"], seconds)
    if track.has_geometry:
        draw_pose(axes[2], on_grid(grid, track.frames, track.pose, 3), seconds)
        axes[2].set_title(attention_title(info), fontsize=9)
        draw_attention(axes[3], on_grid(grid, track.frames, track.looking, 1)[:, 0], seconds, track, info)
    axes[-1].set_xlabel("time (s)")
    fig.subplots_adjust(left=0.07, right=0.87, top=0.92, bottom=0.1, hspace=0.25 if track.has_geometry else 0.1)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def draw_segments(strip, segments: list[dict[str, Any]], seconds: np.ndarray) -> None:
    """The dominant emotion per segment as a coloured strip."""
    for seg in segments:
        if seg["emotion"] is None:
            continue
        color = np.array(label_color(seg["emotion"])) / 255
        strip.axvspan(seg["start_s"], seg["end_s"], color=color, alpha=0.9)
        middle = (seg["start_s"] + min(seg["end_s"], seconds[-1])) / 2
        strip.text(middle, 0.5, seg["emotion"], ha="center", va="center", fontsize=8)
    strip.set(yticks=[], ylabel="segment", ylim=(0, 1))
    strip.yaxis.label.set_size(8)


def draw_pose(ax, pose: np.ndarray, seconds: np.ndarray) -> None:
    """Yaw, pitch and roll in degrees over time (gaps where the face or its geometry is absent)."""
    for column, (name, color) in enumerate((("yaw", "#1f77b4"), ("pitch", "#d62728"), ("roll", "#7f7f7f"))):
        ax.plot(seconds, pose[:, column], color=color, linewidth=1.2, label=name)
    ax.axhline(0, color="black", linewidth=0.5, alpha=0.4)
    ax.set_ylabel("head pose (°)", fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.grid(alpha=0.25)


def cell_edges(seconds: np.ndarray) -> np.ndarray:
    """The edges of the time cells around each processed frame (midway between frames; half a step at the ends)."""
    if len(seconds) == 1:
        return np.array([seconds[0] - 0.5, seconds[0] + 0.5])
    middle = (seconds[1:] + seconds[:-1]) / 2
    return np.concatenate([[2 * seconds[0] - middle[0]], middle, [2 * seconds[-1] - middle[-1]]])


def draw_attention(strip, looking: np.ndarray, seconds: np.ndarray, track: VideoTrack, info: dict) -> None:
    """Looking at the camera (green) or not (grey) over time, white where unknown, and each blink as a tick."""
    edges = cell_edges(seconds)
    for i, value in enumerate(looking):
        if not np.isnan(value):
            strip.axvspan(edges[i], edges[i + 1], color="#2ca02c" if value else "#c7c7c7", linewidth=0)
    if track.blinks:
        strip.vlines([t for t, _ in track.blinks], 0, 1, color="black", linewidth=1.5)
    strip.set(yticks=[], ylabel="attention", ylim=(0, 1))
    strip.yaxis.label.set_size(8)


def attention_title(info: dict) -> str:
    """The pose panel's title: the share looking at the camera and the blinks."""
    attention = info["attention"]
    share, rate = attention["looking_at_camera"], attention["blink_rate_per_min"]
    text = "head pose; attention: " + (
        "gaze unknown" if share is None else f"looking at the camera {100 * share:.0f} %"
    )
    text += f" (green), {attention['blinks']} blink(s) (black ticks)"
    return text + ("" if rate is None else f", {rate:.1f} per minute")


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
        report["videos"][source] = video_section(plt, source, video, classes, segment_s, out_dir, md, written)
    if folders:
        report["folders"] = folder_section(plt, folders, classes, out_dir, md, written)
    md_path = atomic_write_text(out_dir / "summary.md", "\n".join(md))
    json_path = atomic_write_text(out_dir / "summary.json", json.dumps(report, indent=1) + "\n")
    report["files"] = [str(p) for p in (md_path, json_path, *written)]
    return report


def video_section(
    plt, source: str, video: Video, classes: list[str], segment_s: float | None, out_dir: Path, md: list, written: list
) -> dict[str, Any]:
    """One video's numbers; its Markdown appended to ``md``, its pictures (the longest tracks') to ``written``."""
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
        info = entry["tracks"][str(track_id)] = track_summary(track, video, classes, segment)
        title = f"{Path(source).name}, track {track_id}"
        md += [f"### Track {track_id}", ""]
        if n < MAX_TRACKS and plt is not None:
            name = out_dir / f"{slug(Path(source).stem)}_track{track_id}.png"
            written.append(plot_track(plt, track, video, classes, info, title, name))
            md += [f"![{title}]({written[-1].name})", ""]
        md += track_markdown(info)
    return entry


def track_markdown(info: dict[str, Any]) -> list[str]:
    """A track's presence, attention and blinks (with geometry), shares of time and segments table."""
    span = f"{info['first_s']:.1f} s to {info['last_s']:.1f} s"
    md = [f"Face present {100 * info['present']:.1f} % of the time ({span})."]
    attention = info.get("attention")
    if attention is not None:
        share, rate = attention["looking_at_camera"], attention["blink_rate_per_min"]
        pose = attention["mean_pose"]
        looking = "gaze unknown" if share is None else f"looking at the camera {100 * share:.1f} % of the time"
        md += [
            f"{looking[0].upper()}{looking[1:]} (of {attention['frames_with_geometry']} frames with geometry); "
            f"mean head pose yaw {pose['yaw']:+.1f}°, pitch {pose['pitch']:+.1f}°, roll {pose['roll']:+.1f}°; "
            f"{attention['blinks']} blink(s)" + ("" if rate is None else f", {rate:.1f} per minute") + "."
        ]
    md += ["", "| emotion | share of time |", "|---|---|"]
    md += [f"| {c} | {100 * s:.1f} % |" for c, s in sorted(info["share"].items(), key=lambda kv: -kv[1]) if s > 0]
    extra = attention is not None
    md += ["", "| segment | dominant emotion | mean p |" + (" looking at camera | yaw | pitch |" if extra else "")]
    md.append("|---|---|---|" + ("---|---|---|" if extra else ""))
    for seg in info["segments"]:
        label = seg["emotion"] or "(no face)"
        p = "" if seg["p"] is None else f"{seg['p']:.2f}"
        line = f"| {seg['start_s']:.0f}–{seg['end_s']:.0f} s | {label} | {p} |"
        if extra:
            look = "" if seg["looking"] is None else f"{100 * seg['looking']:.0f} %"
            yaw, pitch = ("" if seg[k] is None else f"{seg[k]:+.0f}°" for k in ("yaw", "pitch"))
            line += f" {look} | {yaw} | {pitch} |"
        md.append(line)
    return [*md, ""]


def folder_section(
    plt, folders: dict[str, Folder], classes: list[str], out_dir: Path, md: list, written: list
) -> dict[str, Any]:
    """The image folders' numbers; their Markdown appended to ``md``, their chart to ``written``."""
    md += ["## Images per folder", ""]
    if plt is not None:
        written.append(plot_folders(plt, folders, classes, out_dir / "folders.png"))
        md += [f"![Emotions per folder]({written[-1].name})", ""]
    md += ["| folder | images | with a face | faces | " + " | ".join(classes) + " |"]
    md += ["|---" * (4 + len(classes)) + "|"]
    numbers = {}
    for name, folder in sorted(folders.items()):
        faces = sum(folder.emotions.values())
        shares = [f"{100 * folder.emotions[c] / faces:.0f} %" if faces else "" for c in classes]
        md.append(
            f"| {name} | {len(folder.images)} | {len(folder.with_faces)} | {faces} | " + " | ".join(shares) + " |"
        )
        numbers[name] = {
            "images": len(folder.images),
            "with_faces": len(folder.with_faces),
            "emotions": dict(folder.emotions),
        }
    md.append("")
    return numbers
