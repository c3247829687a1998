"""Label flicker on real videos with and without per-track probability smoothing.

Each video is run once (detection, tracking, classification); smoothing with each alpha is then applied
to the recorded per-track probabilities, exactly as ``predict_video(smooth=alpha)`` would. Reported per
video and alpha: label changes per second of track time, and the fraction of consecutive processed frames
(within a track) whose label differs.

    python benchmarks/flicker.py [--alphas 0.5 0.3] [--every 1] [--threads 2] [VIDEO ...]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from expressnet import Recognizer
from expressnet.data import data_root
from expressnet.infer.smoothing import ProbabilitySmoother, flicker_rate, label_changes

VIDEOS = ("WolfgangLanger_Pexels_pyfeat.mp4", "single_face_pyfeat.mp4")


def record(recognizer: Recognizer, video: Path, every: int) -> dict[int, list[tuple[float, np.ndarray]]]:
    """Track id -> [(time_s, probabilities), ...] over the processed frames."""
    tracks = defaultdict(list)
    for result in recognizer.predict_video(video, every=every):
        for face in result.faces:
            probs = np.array([face.probabilities[c] for c in recognizer.class_names])
            tracks[face.track_id].append((result.time_s, probs))
    return tracks


def labels(track: list[tuple[float, np.ndarray]], alpha: float | None) -> list[int]:
    smoother = ProbabilitySmoother(alpha) if alpha is not None else None
    return [int(np.argmax(p if smoother is None else smoother.update(0, p))) for _, p in track]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.5, 0.3])
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    videos = args.videos or [data_root() / "photos" / "video" / name for name in VIDEOS]
    recognizer = Recognizer(args.model, detector_options={"threads": args.threads})
    header = ("smoothing", 10), ("tracks", 6), ("frames", 6), ("changes", 7), ("changes/s", 9), ("flicker", 8)
    print(f"{'video':34s} " + " ".join(f"{name:>{width}s}" for name, width in header))
    for video in videos:
        if not video.is_file():
            print(f"{video}: not found, skipped")
            continue
        tracks = list(record(recognizer, video, args.every).values())
        frames = sum(len(t) for t in tracks)
        seconds = sum(t[-1][0] - t[0][0] for t in tracks if len(t) > 1)
        for alpha in [None, *args.alphas]:
            sequences = [labels(t, alpha) for t in tracks]
            changes = sum(label_changes(s) for s in sequences)
            setting = "off" if alpha is None else f"alpha {alpha}"
            per_second = changes / seconds if seconds else 0.0
            counts = f"{len(tracks):6d} {frames:6d} {changes:7d} {per_second:9.2f} {flicker_rate(sequences):8.3f}"
            print(f"{video.name[:34]:34s} {setting:>10s} {counts}")


if __name__ == "__main__":
    main()
