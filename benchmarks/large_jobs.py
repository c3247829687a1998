"""Large jobs: peak memory of ``expressnet predict`` over a big folder and an hour-long video, and images/s of the
local engine against the Ray engine on the same folder.

* folder: ``--images`` (100,000) hard links (symlinks where links cannot be made) of real JPEG photos from
  ``../shared/data/photos`` cycled, in one folder under ``--work``; ``--detector none`` (each image is taken as a
  face crop: decode, crop, classify; detection is per image and would not change memory, only time);
* video: the real ``WolfgangLanger_Pexels_pyfeat.mp4`` (19.7 s) looped to ``--video-minutes`` (60) with OpenCV's
  VideoWriter (mp4v, 640x360, its frame rate), then predicted with the default detector (BlazeFace) and
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
import os
import platform
import re
import resource
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


def looped_video(path: Path, minutes: float) -> tuple[Path, int]:
    """The real video looped to ``minutes`` (re-encoded with mp4v; kept when already built)."""
    source = str(data_root() / "photos" / VIDEO)
    capture = cv2.VideoCapture(source)
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    frames = round(minutes * 60 * fps)
    if path.exists() and int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)) == frames:
        return path, frames
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp_" + path.name)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    written = 0
    while written < frames:
        capture = cv2.VideoCapture(source)
        while written < frames:
            ok, frame = capture.read()
            if not ok:
                break
            writer.write(frame)
            written += 1
        capture.release()
    writer.release()
    os.replace(tmp, path)
    return path, frames


def measure(args: list[str]) -> dict:
    """Run ``expressnet predict ARGS``; its peak RSS (MiB), wall time and closing line."""
    command = [sys.executable, "-m", "expressnet", "predict", *args, "--overwrite", "--no-progress"]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate()
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the peak of this process's children: run_child
    line = next((line for line in stdout.splitlines() if "file(s)" in line), "")
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stdout}\n{stderr}")
    seconds = float(re.search(r" in ([\d.]+) s", line).group(1)) if " in " in line else wall
    frames = int(re.search(r"(\d+) frame\(s\)", line).group(1)) if line else 0
    return {"rss_mib": usage.ru_maxrss / 1024, "wall_s": wall, "run_s": seconds, "frames": frames, "line": line}


def run_child(args: list[str]) -> dict:
    """:func:`measure` in a fresh interpreter, so that ``RUSAGE_CHILDREN`` is this one run's peak."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import large_jobs; "
    code += f"print(json.dumps(large_jobs.measure({args!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


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
    args = parser.parse_args()
    work, skip = Path(args.work), set(filter(None, args.skip.split(",")))
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    common = ["--threads", "1"]
    if "folder" not in skip:
        folder = link_folder(work / f"folder_{args.images}", args.images)
        out = work / "folder.jsonl"
        r = run_child([str(folder), "--detector", "none", "--batch-size", "32", "--json", str(out), *common])
        results["folder"] = {"images": args.images, **r}
        print(f"folder of {args.images:,} images: peak RSS {r['rss_mib']:.0f} MiB, {r['line']}", flush=True)
    if "video" not in skip:
        video, frames = looped_video(work / f"looped_{args.video_minutes:g}min.mp4", args.video_minutes)
        out = work / "video.jsonl"
        r = run_child([str(video), "--every", str(args.every), "--json", str(out), *common])
        results["video"] = {"minutes": args.video_minutes, "frames_in_file": frames, "every": args.every, **r}
        head = f"{args.video_minutes:g}-minute video ({frames:,} frames, --every {args.every})"
        print(f"{head}: peak RSS {r['rss_mib']:.0f} MiB, {r['line']}", flush=True)
    if "ray" not in skip:
        folder = link_folder(work / f"throughput_{args.throughput_images}", args.throughput_images)
        rates = {}
        for engine in ("local", "ray"):
            extra = ["--engine", "ray", "--num-workers", str(args.num_workers)] if engine == "ray" else []
            out = work / f"throughput_{engine}.jsonl"
            r = run_child([str(folder), "--detector", "none", "--json", str(out), *extra, *common])
            rates[engine] = {**r, "images_per_s": args.throughput_images / r["run_s"]}
            print(f"{engine}: {rates[engine]['images_per_s']:.1f} images/s ({r['line']})", flush=True)
        results["throughput"] = {"images": args.throughput_images, "num_workers": args.num_workers, **rates}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
