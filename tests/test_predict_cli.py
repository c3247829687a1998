"""``expressnet predict``: sources of every kind, JSONL/CSV rows, annotated outputs, failures that do not stop
the batch, and inputs that are never written over. A tiny untrained checkpoint keeps these fast."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import pytest
import torch
from conftest import ASTRONAUT, real_data
from typer.testing import CliRunner

from expressnet.cli import app
from expressnet.data.labels import FER2013_CLASSES
from expressnet.infer.outputs import columns
from expressnet.infer.recognizer import Recognizer

runner = CliRunner()


def predict(*args: str | Path):
    threads = torch.get_num_threads()  # --threads sets it for the process: restore it for the other tests
    try:
        return runner.invoke(app, ["predict", *map(str, args), "--threads", "1", "--no-progress"])
    finally:
        torch.set_num_threads(threads)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "a_astronaut.jpg")
    cv2.imwrite(str(folder / "b_blank.png"), 128 + 0 * cv2.imread(str(ASTRONAUT)))  # no face
    (folder / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def test_folder_with_a_corrupt_file(checkpoint, photo_folder, tmp_path):
    before = digest(photo_folder)
    out = tmp_path / "out"
    result = predict(
        photo_folder,
        "--model",
        checkpoint,
        "--csv",
        out / "rows.csv",
        "--json",
        out / "rows.jsonl",
        "--save-annotated",
        out / "annotated",
    )
    assert result.exit_code == 1, result.output  # some inputs failed; the others were processed
    assert "c_corrupt.jpg" in result.stderr and "3 file(s), 2 frame(s), 1 face(s), 1 failure(s)" in result.stdout
    rows = read_csv(out / "rows.csv")
    assert list(rows[0]) == columns(FER2013_CLASSES) and len(rows) == 1
    assert rows[0]["source"].endswith("a_astronaut.jpg") and rows[0]["frame"] == "0" and rows[0]["time_s"] == ""
    assert sum(float(rows[0][f"p_{c}"]) for c in FER2013_CLASSES) == pytest.approx(1.0, abs=1e-4)
    lines = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["time_s"] is None and lines[0]["emotion"] == rows[0]["emotion"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == [
        "a_astronaut_annotated.jpg",
        "b_blank_annotated.png",
    ]
    assert not [p for p in out.rglob(".*")]  # no temporary files left
    assert digest(photo_folder) == before


def test_inputs_are_never_written_over(checkpoint, photo_folder):
    before = digest(photo_folder)
    result = predict(photo_folder / "a_astronaut.jpg", "--model", checkpoint, "--csv", photo_folder / "a_astronaut.jpg")
    assert result.exit_code == 2 and "is an input" in result.output
    # annotated images beside the inputs get new names, also when an input already has the first one
    shutil.copy(ASTRONAUT, photo_folder / "a_astronaut_annotated.jpg")
    before = digest(photo_folder)
    result = predict(photo_folder / "a_astronaut*.jpg", "--model", checkpoint, "--save-annotated", photo_folder)
    assert result.exit_code == 0, result.output
    after = digest(photo_folder)
    assert {k: after[k] for k in before} == before
    assert sorted(set(after) - set(before)) == ["a_astronaut_annotated_2.jpg", "a_astronaut_annotated_annotated.jpg"]


def test_missing_source_and_bad_options(checkpoint, tmp_path):
    result = predict(tmp_path / "nothing_here.jpg", "--model", checkpoint)
    assert result.exit_code == 2 and "nothing_here.jpg" in result.output
    assert predict(ASTRONAUT, "--model", checkpoint, "--smooth", "1.5").exit_code == 2
    assert predict(ASTRONAUT, "--model", tmp_path / "nope.safetensors").exit_code == 2


def test_single_image_to_jsonl_with_other_detectors(checkpoint, tmp_path):
    for detector, faces in (("haar", 1), ("none", 1)):
        out = tmp_path / f"{detector}.jsonl"
        result = predict(ASTRONAUT, "--model", checkpoint, "--detector", detector, "--json", out)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == faces and rows[0]["face"] == 0 and rows[0]["track_id"] is None
    assert rows[0]["w"] == 512 and rows[0]["score"] == 1.0  # none: the whole image is the face


@pytest.mark.data
def test_real_video_rows_and_annotated_video(checkpoint, tmp_path):
    video = real_data("photos/video/WolfgangLanger_Pexels_pyfeat.mp4")
    out = tmp_path / "out.csv"
    result = predict(
        video,
        "--model",
        checkpoint,
        "--csv",
        out,
        "--every",
        "10",
        "--max-frames",
        "6",
        "--smooth",
        "0.5",
        "--save-annotated",
        tmp_path / "annotated",
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [int(r["frame"]) for r in rows] == [0, 10, 20, 30, 40, 50]  # one face per processed frame
    fps = cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS)
    assert [float(r["time_s"]) for r in rows] == pytest.approx([f / fps for f in range(0, 60, 10)], abs=1e-3)
    assert {r["track_id"] for r in rows} == {"0"} and {r["face"] for r in rows} == {"0"}
    annotated = tmp_path / "annotated" / "WolfgangLanger_Pexels_pyfeat_annotated.mp4"
    capture = cv2.VideoCapture(str(annotated))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (640, 360)


def test_all_frames_and_the_no_face_rule(checkpoint, photo_folder, tmp_path):
    out = tmp_path / "rows.csv"
    result = predict(photo_folder, "--model", checkpoint, "--csv", out, "--all-frames")
    assert result.exit_code == 1, result.output  # c_corrupt.jpg
    rows = {Path(r["source"]).name: r for r in read_csv(out)}
    assert sorted(rows) == ["a_astronaut.jpg", "b_blank.png"]  # a row for the image without a face too
    assert rows["a_astronaut.jpg"]["face_detected"] == "True" and rows["a_astronaut.jpg"]["face"] == "0"
    blank = rows["b_blank.png"]
    assert blank["face_detected"] == "False" and blank["face"] == blank["emotion"] == blank["p_happy"] == ""
    out = tmp_path / "whole.jsonl"
    result = predict(photo_folder / "b_blank.png", "--model", checkpoint, "--json", out, "--no-face", "whole")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["face_detected"] is False and row["score"] == 0.0 and row["emotion"] in FER2013_CLASSES
    assert (row["x"], row["y"], row["w"], row["h"]) == (0, 0, 512, 512)
    assert predict(ASTRONAUT, "--model", checkpoint, "--no-face", "guess").exit_code == 2
    assert predict(ASTRONAUT, "--model", checkpoint, "--tiles", "x").exit_code == 2


def test_a_bug_is_not_reported_as_a_bad_file(checkpoint, photo_folder, monkeypatch):
    def broken(self, rgb, boxes=None):
        raise ValueError("a programming error")

    monkeypatch.setattr(Recognizer, "detect", broken)  # in a decoding thread of the stream
    result = predict(photo_folder, "--model", checkpoint)
    # the run stops with the error (the CLI's usage exit code): not one "bad file" among others
    assert result.exit_code == 2 and "a programming error" in result.output and "failure(s)" not in result.output


@pytest.mark.data
def test_all_frames_of_a_video_without_faces(checkpoint, tmp_path):
    video = real_data("photos/video/no_face_pyfeat.mp4")
    out = tmp_path / "rows.jsonl"
    result = predict(video, "--model", checkpoint, "--json", out, "--every", "10", "--all-frames", "--retry", "none")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted({r["frame"] for r in rows}) == list(range(0, 98, 10))  # no holes in the timeline
    assert all(r["face_detected"] == (r["face"] is not None) for r in rows)
