"""Large jobs: peak memory of ``expressnet predict`` over a big folder and an hour-long video, and images/s of the
local engine against the Ray engine on the same folder.

* folder: ``--images`` (100,000) hard links (symlinks where links cannot be made) of real JPEG photos from
  ``../shared/data/photos`` cycled, in one folder under ``--work``; ``--detector none`` (each image is taken as a
  face crop: decode, crop, classify; detection is per image and would not change memory, only time);
* video: the real ``WolfgangLanger_Pexels_pyfeat.mp4`` (19.7 s) looped to ``--video-minutes`` (60): its H.264
  stream copied 183 times end to end by ffmpeg (found on PATH or from ``pip install imageio-ffmpeg``; without it,
  re-encoded with OpenCV's VideoWriter, which takes long), then predicted with the default detector (BlazeFace) and
  ``--every`` (24: one frame a second); every frame of the hour is read (the others grabbed, not classified);
* throughput: ``--throughput-images`` (2,000) of the same links, ``--engine local`` against ``--engine ray``
  (a local Ray instance, ``--num-workers`` workers), wall time from the run's own closing line (Ray's start
  included).

Each run is a fresh ``expressnet predict`` process, started by a fresh interpreter; its peak RSS is the kernel's
(``ru_maxrss`` of that interpreter's children). Ray's workers are other processes: only the driver's RSS is
shown for it.

    nice -n 19 python benchmarks/large_jobs.py [--images 100000] [--video-minutes 60] [--every 24]
        [--throughput-images 2000] [--num-workers 2] [--skip folder,video,ray] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2

from expressnet.data import data_root

PHOTOS = ("labelled/surprised_pyfeat.jpg", "group/bbt2_faceapi.jpg", "group/bbt4_faceapi.jpg")
PHOTOS += ("group/selfie-many-people_deepface.jpg", "hard/blurred_motion_insightface.jpg")
PHOTOS += ("hard/profile_left_face_insightface.jpeg",)
VIDEO = "video/WolfgangLanger_Pexels_pyfeat.mp4"


def link_folder(folder: Path, n: int) -> Path:
    """``n`` links of the real photos in ``folder`` (kept when already built)."""
    if folder.is_dir() and sum(1 for _ in os.scandir(folder)) == n:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = [data_root() / "photos" / p for p in PHOTOS]
    for i in range(n):
        source = sources[i % len(sources)]
        target = folder / f"img_{i:06d}{source.suffix}"
        if target.exists():
            continue
        try:
            os.link(source, target)
        except OSError:
            os.symlink(source, target)
    return folder


def ffmpeg() -> str | None:
    """An ffmpeg binary: on PATH, or the one the imageio-ffmpeg package ships (``pip install imageio-ffmpeg``)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ModuleNotFoundError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def looped_video(path: Path, minutes: float) -> tuple[Path, int]:
    """The real video looped to ``minutes``: its stream copied end to end by ffmpeg's concat demuxer (no
    re-encoding) when ffmpeg is found, else re-encoded frame by frame with OpenCV (mp4v). Kept when built."""
    source = data_root() / "photos" / VIDEO
    capture = cv2.VideoCapture(str(source))
    fps, count = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()

    def frames_in(p: Path) -> int:
        return int(cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT)) if p.exists() else 0

    if frames_in(path) >= minutes * 60 * fps - 2 * fps:  # the stream copy ends on a whole frame near the hour
        return path, frames_in(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp_" + path.name)
    binary = ffmpeg()
    if binary is not None:
        listing = path.with_suffix(".concat.txt")
        listing.write_text(f"file '{source}'\n" * math.ceil(minutes * 60 * fps / count))
        command = [binary, "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0"]
        command += ["-i", str(listing), "-c", "copy", "-t", str(minutes * 60), "-f", "mp4", str(tmp)]
        subprocess.run(command, check=True)
    else:
        frames = round(minutes * 60 * fps)
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        written = 0
        while written < frames:
            capture = cv2.VideoCapture(str(source))
            while written < frames:
                ok, frame = capture.read()
                if not ok:
                    break
                writer.write(frame)
                written += 1
            capture.release()
        writer.release()
    os.replace(tmp, path)
    return path, frames_in(path)


def status_kib(pid: int, field: str) -> int | None:
    """A ``/proc/PID/status`` field in KiB (VmRSS, VmHWM: the peak), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def journal_inputs(out: Path) -> int | None:
    """Inputs done by the run writing ``out``, from its progress journal."""
    try:
        return json.loads(out.with_name(out.name + ".progress").read_text())["position"]["input"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measure(
    args: list[str], out: Path, resume: bool = False, time_limit: float | None = None, sample: float = 60
) -> dict:
    """Run ``expressnet predict ARGS --json OUT``: its peak RSS (MiB; the kernel's high-water mark, VmHWM, read
    while it runs and ``ru_maxrss`` once it has ended), wall time and closing line. ``time_limit``: killed with
    SIGKILL after that many seconds (it can be resumed: ``resume``), reporting how far it got. Prints a sample
    of RSS and inputs done every ``sample`` seconds (memory that stays flat shows as flat)."""
    command = [sys.executable, "-m", "expressnet", "predict", *args, "--json", str(out), "--no-progress"]
    command.append("--resume" if resume else "--overwrite")
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, samples, last = 0, [], started
    killed = False
    while process.poll() is None:
        time.sleep(0.5)
        hwm = status_kib(process.pid, "VmHWM")
        peak = max(peak, hwm or 0)
        now = time.monotonic()
        if now - last >= sample:
            last = now
            samples.append((round(now - started), journal_inputs(out), (status_kib(process.pid, "VmRSS") or 0) // 1024))
            print(f"  {samples[-1][0]} s: {samples[-1][1]} inputs done, RSS {samples[-1][2]} MiB", flush=True)
        if time_limit is not None and now - started > time_limit and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed = True
    stdout, stderr = process.communicate()
    wall = time.monotonic() - started
    peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # this interpreter's only child
    line = next((line for line in stdout.splitlines() if "file(s)" in line), "")
    if not killed and process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stdout}\n{stderr}")
    seconds = float(re.search(r" in ([\d.]+) s", line).group(1)) if " in " in line else wall
    frames = int(re.search(r"(\d+) frame\(s\)", line).group(1)) if line else 0
    result = {"rss_mib": peak / 1024, "wall_s": wall, "run_s": seconds, "frames": frames, "line": line}
    if killed:
        result.update(killed_after_s=round(wall), inputs_done=journal_inputs(out))
        result["line"] = f"killed after {wall:.0f} s (time limit) with {result['inputs_done']} inputs done"
    return {**result, "samples": samples}


def run_child(args: list[str], out: Path, **options) -> dict:
    """:func:`measure` in a fresh interpreter, so that ``RUSAGE_CHILDREN`` is this one run's peak."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import large_jobs, pathlib; "
    code += f"print(json.dumps(large_jobs.measure({args!r}, pathlib.Path({str(out)!r}), **{options!r})))"
    process = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, check=True)
    lines = process.stdout.splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--video-minutes", type=float, default=60.0)
    parser.add_argument("--every", type=int, default=24)
    parser.add_argument("--throughput-images", type=int, default=2000)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--work", default="/tmp/expressnet_large_jobs")
    parser.add_argument("--skip", default="", help="comma-separated: folder, video, ray")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--time-limit", type=float, default=None, help="kill each run after this many seconds")
    parser.add_argument("--resume", action="store_true", help="continue runs a time limit (or kill -9) stopped")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between RSS samples")
    args = parser.parse_args()
    work, skip = Path(args.work), set(filter(None, args.skip.split(",")))
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    common = ["--threads", "1"]
    options = {"resume": args.resume, "time_limit": args.time_limit, "sample": args.sample}
    if "folder" not in skip:
        folder = link_folder(work / f"folder_{args.images}", args.images)
        r = run_child(
            [str(folder), "--detector", "none", "--batch-size", "32", *common], work / "folder.jsonl", **options
        )
        results["folder"] = {"images": args.images, **r}
        print(f"folder of {args.images:,} images: peak RSS {r['rss_mib']:.0f} MiB, {r['line']}", flush=True)
    if "video" not in skip:
        video, frames = looped_video(work / f"looped_{args.video_minutes:g}min.mp4", args.video_minutes)
        r = run_child([str(video), "--every", str(args.every), *common], work / "video.jsonl", **options)
        results["video"] = {"minutes": args.video_minutes, "frames_in_file": frames, "every": args.every, **r}
        head = f"{args.video_minutes:g}-minute video ({frames:,} frames, --every {args.every})"
        print(f"{head}: peak RSS {r['rss_mib']:.0f} MiB, {r['line']}", flush=True)
    if "ray" not in skip:
        folder = link_folder(work / f"throughput_{args.throughput_images}", args.throughput_images)
        rates = {}
        for engine in ("local", "ray"):
            extra = ["--engine", "ray", "--num-workers", str(args.num_workers)] if engine == "ray" else []
            out = work / f"throughput_{engine}.jsonl"
            r = run_child([str(folder), "--detector", "none", *extra, *common], out, sample=args.sample)
            rates[engine] = {**r, "images_per_s": args.throughput_images / r["run_s"]}
            print(f"{engine}: {rates[engine]['images_per_s']:.1f} images/s ({r['line']})", flush=True)
        results["throughput"] = {"images": args.throughput_images, "num_workers": args.num_workers, **rates}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
