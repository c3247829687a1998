"""``expressnet summarize``: per video track a timeline picture, shares of time, dominant emotion per segment and
face presence, and with geometry head pose, attention and blinks; per image folder an emotion chart; a Markdown
page linking the pictures; a clear error naming the extra when matplotlib is missing. Rows come from a tiny
untrained model on generated inputs, from hand-written rows, and (geometry, blinks) from a real video."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import real_data
from test_predict_cli import predict
from test_stream import image_folder, synthetic_video
from typer.testing import CliRunner

from expressnet.cli import app
from expressnet.infer.summary import frame_step, segment_length, summarize

runner = CliRunner()


@pytest.fixture(scope="module")
def rows(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    image_folder(folder / "photos" / "a", 9)
    image_folder(folder / "photos" / "b", 4)
    synthetic_video(folder / "photos" / "clip.avi", 60)
    out = folder / "rows.jsonl"
    result = predict(
        folder / "photos", "--recursive", "--model", checkpoint, "--json", out, "--every", "2", "--detector", "none"
    )
    assert result.exit_code == 1, result.output  # the corrupt image of each folder
    return out


def test_summary_of_videos_and_folders(rows, tmp_path):
    result = runner.invoke(app, ["summarize", str(rows), "--out", str(tmp_path / "summary"), "--segment", "0.5"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "summary").iterdir())
    assert names == ["clip_track0.png", "folders.png", "summary.json", "summary.md"]
    report = json.loads((tmp_path / "summary" / "summary.json").read_text())
    (video,) = report["videos"].values()
    track = video["tracks"]["0"]
    assert video["processed_frames"] == 30 and track["frames"] == 30 and track["present"] == 1.0
    assert sum(track["share"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(track["segments"]) == 5 and all(s["emotion"] in report["classes"] for s in track["segments"])
    assert sorted(p.split("/")[-1] for p in report["folders"]) == ["a", "b", "photos"]  # photos: the blank templates
    assert report["folders"][next(p for p in report["folders"] if p.endswith("a"))]["images"] == 8  # 1 corrupt
    markdown = (tmp_path / "summary" / "summary.md").read_text()
    assert "![clip.avi, track 0](clip_track0.png)" in markdown and "![Emotions per folder](folders.png)" in markdown
    assert (tmp_path / "summary" / "clip_track0.png").read_bytes()[:4] == b"\x89PNG"


def test_face_presence_counts_the_frames_without_a_face(tmp_path):
    rows = tmp_path / "rows.jsonl"
    base = {"source": "v.mp4", "face": 0, "x": 0, "y": 0, "w": 1, "h": 1, "score": 0.9, "face_detected": True}
    lines = []
    for frame in range(0, 40, 4):  # --every 4; the face is in the first half only (no rows after)
        time_s = frame / 10
        if frame < 20:
            p = {"p_happy": 0.8, "p_sad": 0.2}
            lines.append({**base, "frame": frame, "time_s": time_s, "track_id": 0, "emotion": "happy", **p})
        else:
            lines.append({"source": "v.mp4", "frame": frame, "time_s": time_s, "face_detected": False, "emotion": None})
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = summarize(rows, tmp_path / "out")
    track = report["videos"]["v.mp4"]["tracks"]["0"]
    assert track["present"] == 0.5 and track["share"]["happy"] == 1.0
    assert [s["emotion"] for s in track["segments"]][-1] is None  # a segment without the face
    assert frame_step([0, 4, 12]) == 4 and segment_length(3600) == 600 and segment_length(19.6) == 2


def test_without_matplotlib_the_summary_has_no_pictures_and_names_the_extra(rows, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["summarize", str(rows), "--out", str(tmp_path / "summary")])
    assert result.exit_code == 0 and "pip install 'expressnet[plots]'" in result.output  # the core install
    assert sorted(p.name for p in (tmp_path / "summary").iterdir()) == ["summary.json", "summary.md"]
    assert "pip install 'expressnet[plots]'" in (tmp_path / "summary" / "summary.md").read_text()


def test_head_pose_attention_and_blinks_per_track(tmp_path):
    """Rows with geometry: the share of time looking at the camera, the mean pose, the blinks and their rate per
    minute of the time the eyes were measured, per segment too; the picture gets the pose and attention panels."""
    rows = tmp_path / "rows.jsonl"
    base = {"source": "v.mp4", "face": 0, "x": 0, "y": 0, "w": 1, "h": 1, "score": 0.9, "face_detected": True}
    lines = []
    for frame in range(60):  # 10 frames/s, 5.9 s observed; looking at the camera for the first 45 frames
        geometry = {"yaw": frame - 30.0, "pitch": 5.0, "roll": 0.0, "looking_at_camera": frame < 45}
        geometry |= {"eye_open_right": 0.3, "eye_open_left": 0.3, "blink_s": 0.2 if frame in (20, 40) else None}
        p = {"p_happy": 0.8, "p_sad": 0.2}
        lines.append({**base, "frame": frame, "time_s": frame / 10, "track_id": 0, "emotion": "happy", **p, **geometry})
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = summarize(rows, tmp_path / "out", segment_s=2.0)
    track = report["videos"]["v.mp4"]["tracks"]["0"]
    attention = track["attention"]
    assert attention["frames_with_geometry"] == 60 and attention["looking_at_camera"] == 0.75
    assert attention["mean_pose"] == {"yaw": -0.5, "pitch": 5.0, "roll": 0.0}
    assert attention["blinks"] == 2 and attention["blink_times_s"] == [2.0, 4.0]
    assert attention["blink_rate_per_min"] == pytest.approx(60 * 2 / 5.9, abs=0.01)
    first, _, last = track["segments"]
    assert (first["looking"], first["yaw"], first["pitch"]) == (1.0, -20.5, 5.0)
    assert last["looking"] == 0.25 and last["yaw"] == 19.5  # frames 40-59: 5 of 20 looking
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "Looking at the camera 75.0 % of the time (of 60 frames with geometry)" in markdown
    assert "2 blink(s), 20.3 per minute" in markdown and "| looking at camera | yaw | pitch |" in markdown


@pytest.mark.data
def test_a_real_blink_from_predict_to_summary(tmp_path):
    """predict --geometry on a real video: the one blink of single_face_pyfeat.mp4 (frames 26-28) is an event on
    the frame row where it ends, and summarize counts it for the track."""
    video = real_data("photos/video/single_face_pyfeat.mp4")
    out = tmp_path / "rows.jsonl"
    result = predict(video, "--geometry", "--json", out, "--csv", tmp_path / "rows.csv")
    assert result.exit_code == 0, result.output
    faces = [(line["frame"], face) for line in map(json.loads, out.read_text().splitlines()) for face in line["faces"]]
    blinks = [(frame, face["blink"]) for frame, face in faces if "blink" in face]
    assert len(blinks) == 1 and 26 <= blinks[0][0] <= 32, blinks
    frame, blink = blinks[0]
    assert blink["count"] == 1 and 0 < blink["duration_s"] <= 0.5 and blink["end_s"] == pytest.approx(frame / 30, 1e-3)
    assert all("pose" in face for _, face in faces)
    report = summarize(tmp_path / "rows.csv", tmp_path / "summary")  # the flat view carries blink_s
    ((_, video_summary),) = report["videos"].items()
    (track,) = video_summary["tracks"].values()
    assert track["attention"]["blinks"] == 1 and track["attention"]["blink_rate_per_min"] > 0
