"""Large jobs: the streaming pipeline (lazy inputs, results in order, the same faces as ``predict_batch``), outputs
written as they go (JSONL, CSV, Parquet parts), refusing to overwrite, ``--resume`` after ``kill -9`` of a real
``expressnet predict`` process (the output equals an uninterrupted run's), and the Ray engine on a local Ray
instance (the same rows as the local engine). A tiny untrained model keeps these fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import ASTRONAUT, real_data
from test_predict_cli import predict

from expressnet import Recognizer
from expressnet.data import DataError
from expressnet.infer.options import PredictOptions
from expressnet.infer.outputs import read_rows
from expressnet.infer.predict import run_predict
from expressnet.infer.recognizer import Face
from expressnet.infer.sources import expand_source, is_source_input, iter_source
from expressnet.infer.stream import Position
from expressnet.infer.tracking import FaceTracks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recognizer(checkpoint) -> Recognizer:
    return Recognizer(checkpoint, backend="torch", detector="haar")


def image_folder(folder: Path, n: int) -> Path:
    """``n`` images: hard links of the astronaut, a faceless grey one every 7th, a corrupt one at 5."""
    folder.mkdir(parents=True, exist_ok=True)
    blank = folder.parent / f"{folder.name}_blank.png"
    cv2.imwrite(str(blank), np.full((64, 80, 3), 128, np.uint8))
    for i in range(n):
        target = folder / f"img_{i:05d}{'.png' if i % 7 == 3 else '.jpg'}"
        if i == 5:
            target.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        else:
            os.link(blank if i % 7 == 3 else ASTRONAUT, target)
    return folder


def synthetic_video(path: Path, frames: int, size: tuple[int, int] = (96, 72)) -> Path:
    """A small MJPG video of the astronaut drifting, one frame per index (for mid-video resume)."""
    face = cv2.resize(cv2.imread(str(ASTRONAUT)), (48, 48))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 40 + i % 50, np.uint8)
        x = 4 + i % 40
        frame[10:58, x : x + 48] = face
        writer.write(frame)
    writer.release()
    return path


def test_lazy_sources_folders_globs_and_lists(tmp_path):
    root = tmp_path / "tree"
    for name in ("b.jpg", "a.png", "sub/c.jpg", "sub/deeper/d.mp4", "sub/.hidden.jpg", "notes.txt", "z/e.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    flat = iter_source(root)
    assert iter(flat) is flat  # a generator: nothing is listed before it is asked for
    assert [p.name for p in flat] == [p.name for p in expand_source(root)] == ["a.png", "b.jpg"]
    deep = [p.relative_to(root).as_posix() for p in iter_source(root, recursive=True)]
    assert deep == ["a.png", "b.jpg", "sub/.hidden.jpg", "sub/c.jpg", "sub/deeper/d.mp4", "z/e.jpg"]
    globbed = [p.relative_to(root).as_posix() for p in iter_source(f"{root}/**/*.jpg")]
    assert globbed == ["b.jpg", "sub/c.jpg", "z/e.jpg"]  # dot files only for a pattern that starts with a dot
    assert is_source_input(root / "sub/c.jpg", f"{root}/**/*.jpg") and not is_source_input(root / "a.png", root / "z")
    listing = tmp_path / "inputs.txt"
    listing.write_text("# a comment\ntree/b.jpg\n\n" + f"{root / 'z/e.jpg'}\n")
    assert [p.name for p in iter_source(listing)] == ["b.jpg", "e.jpg"]
    table = tmp_path / "inputs.csv"
    table.write_text("id,path\n1,tree/a.png\n2,tree/sub/c.jpg\n")
    assert [p.name for p in iter_source(table)] == ["a.png", "c.jpg"]
    with pytest.raises(DataError, match="no files match"):
        list(iter_source(f"{root}/*.gif"))


def test_stream_gives_predict_batch_results_in_order(recognizer, tmp_path):
    folder = image_folder(tmp_path / "photos", 20)
    paths = sorted(folder.iterdir())
    expected = recognizer.predict_batch(paths, return_exceptions=True)
    results = list(recognizer.stream(folder, batch_size=4, workers=2))
    assert [r.index for r in results] == list(range(20)) and [r.path for r in results] == paths
    for result, want in zip(results, expected):
        if isinstance(want, DataError):
            assert result.error is not None and result.path.name in str(result.error) and not result.faces
        else:
            assert [(f.box, f.emotion) for f in result.faces] == [(f.box, f.emotion) for f in want]
            for f, g in zip(result.faces, want):
                assert f.probabilities == pytest.approx(g.probabilities, abs=1e-6)
    commits = [r.commit.input for r in results if r.commit is not None]
    assert commits == [4, 8, 12, 16, 20]  # chunk boundaries, fixed by the input order
    resumed = list(recognizer.stream(folder, batch_size=4, start=Position(12)))
    assert [r.index for r in resumed] == list(range(12, 20))


def test_video_stream_resumes_inside_the_video(recognizer, tmp_path):
    video = synthetic_video(tmp_path / "clip.avi", 40)
    whole = list(recognizer.stream(video, every=2, smooth=0.5, batch_size=4))
    assert [r.frame for r in whole] == list(range(0, 40, 2)) and whole[-1].last and whole[-1].commit.input == 1
    inside = [r for r in whole if r.commit is not None and r.commit.video is not None]
    cut = inside[1]  # after the 2nd chunk: next frame 16, tracks and smoothing state in the position
    position = Position.from_dict(json.loads(json.dumps(cut.commit.to_dict())))
    rest = list(recognizer.stream(video, every=2, smooth=0.5, batch_size=4, start=position))
    tail = whole[whole.index(cut) + 1 :]
    assert [r.frame for r in rest] == [r.frame for r in tail] and not rest[0].first
    for a, b in zip(rest, tail):
        assert [(f.track_id, f.box, f.emotion) for f in a.faces] == [(f.track_id, f.box, f.emotion) for f in b.faces]
        assert [f.probabilities for f in a.faces] == pytest.approx([f.probabilities for f in b.faces])


def drifting_faces(frames: int) -> list[list[Face]]:
    """Two faces drifting apart, noisy probabilities, and eye openness (as geometry) that dips twice for the
    first face (blinks ending at frames 12 and 31) and once, too long to be a blink, for the second."""
    rng = np.random.default_rng(0)
    out = []
    for t in range(frames):
        faces = []
        for k, (x, dip) in enumerate(((10 + 3 * t, (10, 11, 30)), (300 - 3 * t, tuple(range(15, 25))))):
            p = rng.dirichlet(np.ones(3))
            openness = 0.1 if t in dip else 0.3
            geometry = SimpleNamespace(eye_openness=(openness, openness))
            probabilities = {c: float(v) for c, v in zip(("happy", "sad", "neutral"), p)}
            faces.append(Face((x, 40 + k, 60, 60), 0.9, "happy", probabilities, geometry=geometry))
        out.append(faces)
    return out


def test_face_tracks_resume_exactly_from_their_state():
    """FaceTracks (ids, smoothing, blinks) saved mid-video as JSON and restored gives what an unbroken run gives."""
    frames = drifting_faces(40)
    whole = FaceTracks(0.5)
    expected = [whole.update(faces, t / 10) for t, faces in enumerate(frames)]
    first = FaceTracks(0.5)
    got = [first.update(faces, t / 10) for t, faces in enumerate(frames[:20])]
    second = FaceTracks(0.5)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [second.update(faces, t / 10) for t, faces in enumerate(frames[20:], start=20)]
    fields = [[(f.track_id, f.emotion, f.probabilities, f.blink) for f in faces] for faces in expected]
    assert [[(f.track_id, f.emotion, f.probabilities, f.blink) for f in faces] for faces in got] == fields
    blinks = [(t, f.track_id, f.blink) for t, faces in enumerate(expected) for f in faces if f.blink is not None]
    assert [(t, track, b.count) for t, track, b in blinks] == [(12, 0, 1), (31, 0, 2)]  # track 1 shut its eyes 1 s
    assert [b.duration_s for _, _, b in blinks] == pytest.approx([0.2, 0.1])  # closed at 1.0-1.1 s and 3.0 s
    assert blinks[1][2].rate_per_minute == pytest.approx(2 * 60 / 3.1)  # per minute of observed time
    assert [f.probabilities for f in expected[1]] != [f.probabilities for f in frames[1]]  # smoothed
    with pytest.raises(ValueError, match="smooth"):
        FaceTracks(None).load_state_dict(first.state_dict())


@pytest.mark.data
def test_a_video_resumed_inside_keeps_its_blink_state():
    """A real video with geometry, resumed at a chunk boundary before its blink: the same faces, geometry and blink
    as the run never stopped (the blink counters travel in the position)."""
    video = real_data("photos/video/single_face_pyfeat.mp4")
    recognizer = Recognizer(geometry=True, threads=1)
    whole = list(recognizer.stream(video, batch_size=8, max_frames=48))
    cut = next(r for r in whole if r.commit is not None and r.commit.video and r.commit.video["next_frame"] == 16)
    position = Position.from_dict(json.loads(json.dumps(cut.commit.to_dict())))
    rest = list(recognizer.stream(video, batch_size=8, max_frames=48, start=position))
    tail = whole[whole.index(cut) + 1 :]
    assert [[f.to_dict() for f in r.faces] for r in rest] == [[f.to_dict() for f in r.faces] for r in tail]
    blinks = [f.blink for r in rest for f in r.faces if f.blink is not None]
    assert len(blinks) == 1 and blinks[0].count == 1


def test_outputs_written_as_they_go_refused_overwritten_and_parquet(checkpoint, tmp_path):
    folder = image_folder(tmp_path / "photos", 12)
    out = tmp_path / "out"
    args = (folder, "--model", checkpoint, "--json", out / "rows.jsonl", "--csv", out / "rows.csv", "--all-frames")
    result = predict(*args, "--parquet", out / "parquet")
    assert result.exit_code == 1 and "12 file(s), 11 frame(s)" in result.stdout, result.output  # 1 corrupt
    jsonl, csv_rows, parquet = (read_rows(out / n) for n in ("rows.jsonl", "rows.csv", "parquet"))
    assert len(jsonl) == len(csv_rows) == len(parquet) == 11
    assert [r["source"] for r in parquet] == [r["source"] for r in jsonl] == [r["source"] for r in csv_rows]
    assert [r["p_happy"] for r in parquet] == [r.get("p_happy") for r in jsonl]
    assert sorted(p.name for p in out.iterdir()) == ["parquet", "rows.csv", "rows.jsonl"]  # no journal left
    before = (out / "rows.jsonl").read_bytes()
    again = predict(*args)
    assert again.exit_code == 2 and "exists; add --overwrite" in again.output
    assert (out / "rows.jsonl").read_bytes() == before  # nothing a user had is lost
    done = predict(*args, "--resume")
    assert done.exit_code == 0 and "already complete" in done.stdout
    assert predict(*args, "--overwrite").exit_code == 1 and (out / "rows.jsonl").read_bytes() == before


def run_cli(*args: str | Path, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "expressnet", "predict", *map(str, args), "--threads", "1", "--no-progress"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def kill_after_rows(out: Path, process: subprocess.Popen, rows: int, timeout: float = 120.0) -> bool:
    """SIGKILL ``process`` once ``out`` has ``rows`` lines; False when it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= rows:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.wait()
    return False


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "video"])
def test_resume_after_kill_9_equals_an_uninterrupted_run(checkpoint, tmp_path, kind):
    if kind == "folder":
        source = image_folder(tmp_path / "photos", 1500)
        options = ["--detector", "none", "--all-frames", "--batch-size", "8"]
    else:
        source = synthetic_video(tmp_path / "clip.avi", 3000)
        options = ["--detector", "none", "--smooth", "0.5", "--batch-size", "16"]
    reference = tmp_path / "reference"
    whole = run_cli(
        source, "--model", checkpoint, "--json", reference / "rows.jsonl", "--csv", reference / "rows.csv", *options
    )
    assert whole.wait() == (1 if kind == "folder" else 0), whole.stderr.read().decode()
    out = tmp_path / "out"
    command = (source, "--model", checkpoint, "--json", out / "rows.jsonl", "--csv", out / "rows.csv", *options)
    kills = 0
    for rows in (40, 400):  # killed twice, the second time during a resumed run
        process = run_cli(*command, *(["--resume"] if kills else []))
        kills += kill_after_rows(out / "rows.jsonl", process, rows)
    assert kills >= 1, "the run finished before it could be killed: make the input longer"
    assert (out / "rows.jsonl.progress").exists()  # the interrupted run's journal
    refused = run_cli(*command)
    assert refused.wait() == 2 and b"--resume" in refused.stderr.read()  # errors go to stderr
    resumed = run_cli(*command, "--resume")
    code = resumed.wait()
    stdout = resumed.stdout.read().decode()
    assert code == (1 if kind == "folder" else 0), stdout + resumed.stderr.read().decode()
    assert ("resumed after" if kind == "folder" else f"resumed in {source} at frame") in stdout, stdout
    assert (out / "rows.jsonl").read_bytes() == (reference / "rows.jsonl").read_bytes()
    assert (out / "rows.csv").read_bytes() == (reference / "rows.csv").read_bytes()
    assert not (out / "rows.jsonl.progress").exists()
    if kind == "folder":
        assert "1500 file(s), 1499 frame(s)" in stdout and "1 failure(s)" in stdout  # the counts carried over


@pytest.mark.slow
def test_ray_engine_gives_the_local_rows(checkpoint, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'expressnet[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'expressnet[ray]')")
    folder = image_folder(tmp_path / "photos", 24)
    synthetic_video(folder / "zz_clip.avi", 30)
    recipe = {"model": str(checkpoint), "detector": "haar", "backend": "torch", "threads": 1, "progress": False}
    options = PredictOptions(**recipe, every=3, smooth=0.5, all_frames=True)
    recognizer = Recognizer(**options.recognizer_kwargs())
    quiet = {"warn": lambda message: None}
    local = run_predict(folder, recognizer, replace(options, jsonl=tmp_path / "local.jsonl"), **quiet)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote_options = replace(options, jsonl=tmp_path / "ray.jsonl", engine="ray", num_workers=2)
        remote = run_predict(folder, recognizer, remote_options, **quiet)
    finally:
        ray.shutdown()
    assert (remote.files, remote.frames, remote.faces, remote.failures) == (
        local.files,
        local.frames,
        local.faces,
        local.failures,
    )
    a, b = read_rows(tmp_path / "local.jsonl"), read_rows(tmp_path / "ray.jsonl")
    assert len(a) == len(b) > 24
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if not k.startswith("p_")} == {
            k: v for k, v in y.items() if not k.startswith("p_")
        }
        assert [v for k, v in x.items() if k.startswith("p_")] == pytest.approx(
            [v for k, v in y.items() if k.startswith("p_")], abs=1e-5
        )
