"""``expressnet summarize``: per video track a timeline picture, shares of time, dominant emotion per segment and
face presence; per image folder an emotion chart; a Markdown page linking the pictures; a clear error naming the
extra when matplotlib is missing. Rows come from a tiny untrained model on generated inputs."""

from __future__ import annotations

import json
import sys

import pytest
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
