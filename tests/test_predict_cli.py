"""``expressnet predict``: the results table on the terminal, JSON lines (the API's frame results) and CSV rows
(their flat view) to files or stdout, every output naming its model, the exit codes, sources of every kind,
annotated outputs, failures that do not stop the batch, and inputs that are never written over. A tiny untrained
checkpoint keeps the pipeline tests fast; the front-door tests run the shipped default model (no torch)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from pathlib import Path

import cv2
import pytest
from conftest import ASTRONAUT, real_data
from typer.testing import CliRunner

import expressnet
from expressnet.cli import app
from expressnet.data.labels import FER2013_CLASSES
from expressnet.infer.outputs import MODEL_COLUMNS, columns, read_rows
from expressnet.infer.recognizer import Recognizer

runner = CliRunner()


def predict(*args: str | Path):
    torch = sys.modules.get("torch")  # --threads sets torch's threads where torch runs: restore them
    threads = torch.get_num_threads() if torch is not None else None
    try:
        return runner.invoke(app, ["predict", *map(str, args), "--threads", "1", "--no-progress"])
    finally:
        if threads is not None:
            torch.set_num_threads(threads)


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


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
    assert (rows[0]["model"], rows[0]["backend"], rows[0]["precision"]) == ("tiny.safetensors", "torch", "float32")
    lines = json_lines(out / "rows.jsonl")  # one line per image, with or without faces
    assert [len(line["faces"]) for line in lines] == [1, 0] and lines[0]["time_s"] is None
    assert lines[0]["faces"][0]["emotion"] == rows[0]["emotion"] and lines[0]["image"] == {"width": 512, "height": 512}
    assert lines[0]["model"]["sha256"] == rows[0]["model_sha256"] and len(rows[0]["model_sha256"]) == 12
    assert read_rows(out / "rows.jsonl")[0] == {**read_rows(out / "rows.csv")[0], **read_rows(out / "rows.jsonl")[0]}
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
        (line,) = json_lines(out)
        assert len(line["faces"]) == faces and line["faces"][0]["track_id"] is None
    assert line["faces"][0]["box"][2] == 512 and line["faces"][0]["score"] == 1.0  # none: the whole image


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
    (line,) = json_lines(out)
    assert line["faces"][0]["score"] == 0.0 and line["faces"][0]["box"] == [0, 0, 512, 512]
    (row,) = read_rows(out)  # the flat view
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
    result = predict(video, "--model", checkpoint, "--json", out, "--every", "10", "--retry", "none")
    assert result.exit_code == 0, result.output
    lines = json_lines(out)  # a line per processed frame, faces or not: no holes in the timeline
    assert [line["frame"] for line in lines] == list(range(0, 98, 10))
    assert all(line["image"] == lines[0]["image"] and line["image"]["width"] > 0 for line in lines)
    rows = read_rows(out)
    assert all(r["face_detected"] == (r["face"] is not None) for r in rows) and len(rows) >= len(lines)


# The front door: what a user gets from `expressnet predict photo.jpg` with the shipped default model (no torch).


def test_results_are_shown_as_a_table_without_an_output_option():
    result = predict(ASTRONAUT)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["source", "frame", "time", "face", "box", "x,y,w,h", "emotion", "p", "runner-up"]
    cells = lines[1].split()
    assert cells[0] == "astronaut.jpg" and cells[1:4] == ["-", "-", "0"] and cells[5] == "happy"
    assert 0.5 < float(cells[6]) <= 1 and float(cells[8]) < float(cells[6])  # runner-up: name and probability
    record = expressnet.get_record()
    model = f"model {record.name} ({record.sha256()[:12]}, {record.backend} {record.precision})"
    assert "1 file(s), 1 frame(s), 1 face(s), 0 failure(s)" in lines[2] and model in lines[2]
    assert not result.stderr.strip("\n") or "error" not in result.stderr


def test_dash_writes_to_stdout_and_messages_to_stderr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # no file named '-' is written, so a second run works too
        result = predict(ASTRONAUT, "--json", "-")
        assert result.exit_code == 0, result.output
        (line,) = [json.loads(x) for x in result.stdout.splitlines()]
        assert line["faces"][0]["emotion"] == "happy" and line["model"]["name"] == expressnet.get_record().name
        assert "1 file(s)" in result.stderr and not (tmp_path / "-").exists()
    result = predict(ASTRONAUT, "--csv", "-")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert len(rows) == 1 and rows[0]["emotion"] == "happy" and list(rows[0])[-4:] == list(MODEL_COLUMNS)
    assert predict(ASTRONAUT, "--json", "-", "--csv", "-").exit_code == 2
    result = predict(ASTRONAUT, "--json", "-", "--resume")
    assert result.exit_code == 2 and "cannot be resumed" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_same_photos_give_byte_identical_results(tmp_path):
    """No timing decides anything: two runs write the same bytes."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "a.jpg")
    cv2.imwrite(str(folder / "b.png"), cv2.imread(str(ASTRONAUT))[::2, ::-2])
    outputs = []
    for run in (1, 2):
        result = predict(folder, "--json", tmp_path / f"{run}.jsonl", "--csv", tmp_path / f"{run}.csv")
        assert result.exit_code == 0, result.output
        outputs.append([(tmp_path / f"{run}.{kind}").read_bytes() for kind in ("jsonl", "csv")])
    assert outputs[0] == outputs[1]


def test_backend_option_and_exit_codes(checkpoint):
    result = predict(ASTRONAUT, "--backend", "tflite")
    assert result.exit_code == 2 and "unknown classifier backend 'tflite'" in result.stderr
    result = predict(ASTRONAUT, "--model", checkpoint, "--backend", "onnx", "--json", "-")
    if result.exit_code == 0:  # the checkpoint is exported to ONNX on first use (needs the export extra)
        assert json.loads(result.stdout)["model"]["backend"] == "onnx"
    result = predict(ASTRONAUT, "--model", checkpoint, "--backend", "torch", "--json", "-")
    assert result.exit_code == 0 and json.loads(result.stdout)["model"]["backend"] == "torch"


def test_a_camera_that_is_not_there_is_a_usage_error():
    result = predict("7")  # camera index 7: none on a test machine
    assert result.exit_code == 2, result.output
    assert "camera:7: cannot open" in result.stderr and "WARN" not in result.output


def test_results_as_a_dataframe(tmp_path):
    pd = pytest.importorskip("pandas", reason="read_results needs pandas (the analysis extra)")
    out = tmp_path / "rows"
    result = predict(ASTRONAUT, "--json", out.with_suffix(".jsonl"), "--csv", out.with_suffix(".csv"))
    assert result.exit_code == 0, result.output
    from_json, from_csv = (expressnet.read_results(out.with_suffix(s)) for s in (".jsonl", ".csv"))
    assert isinstance(from_json, pd.DataFrame) and len(from_json) == len(from_csv) == 1
    assert list(from_csv.columns) == columns(FER2013_CLASSES) and set(from_json.columns) == set(from_csv.columns)
    assert from_csv["face_detected"].dtype == bool and from_csv["p_happy"].dtype == float
    assert from_json.loc[0, "emotion"] == from_csv.loc[0, "emotion"] == "happy"
    assert from_json.loc[0, "p_happy"] == pytest.approx(from_csv.loc[0, "p_happy"])


def test_a_resumed_video_says_where_it_went_on():
    from expressnet.infer.predict import PredictSummary

    summary = PredictSummary(files=1, frames=40, resumed_at=0, resumed_in="clip.mp4", resumed_frame=120, seconds=1)
    assert summary.line().endswith(" (resumed in clip.mp4 at frame 120)")  # not "after 0 input(s)"
    later = PredictSummary(resumed_at=3, resumed_in="clip.mp4", resumed_frame=8).line()
    assert later.endswith(" (resumed in clip.mp4 at frame 8, after 3 finished input(s))")
    assert PredictSummary(resumed_at=3).line().endswith(" (resumed after 3 finished input(s))")


def test_parquet_names_the_model_in_its_metadata(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="Parquet output needs pyarrow (the ray extra)")
    result = predict(ASTRONAUT, "--parquet", tmp_path / "parts")
    assert result.exit_code == 0, result.output
    (part,) = sorted((tmp_path / "parts").glob("part-*.parquet"))
    table = pq.read_table(part)
    model = json.loads(table.schema.metadata[b"expressnet"])["model"]
    assert model["name"] == expressnet.get_record().name and len(model["sha256"]) == 12
    assert table.column("model_sha256").to_pylist() == [model["sha256"]]


def test_geometry_and_mesh_options(tmp_path):
    """--geometry adds the pose, gaze, eyes and looking-at-camera fields (JSON) and columns (CSV); --mesh the 468
    face-mesh points (JSON only)."""
    rows = tmp_path / "rows"
    result = predict(ASTRONAUT, "--geometry", "--json", rows.with_suffix(".jsonl"), "--csv", rows.with_suffix(".csv"))
    assert result.exit_code == 0, result.output
    (line,) = json_lines(rows.with_suffix(".jsonl"))
    (face,) = line["faces"]
    assert {"pose", "gaze", "eyes", "mouth_openness", "looking_at_camera"} <= set(face) and "mesh" not in face
    (row,) = read_csv(rows.with_suffix(".csv"))
    assert list(row) == columns(FER2013_CLASSES, geometry=True) and row["looking_at_camera"] in ("True", "False")
    assert float(row["yaw"]) == face["pose"]["yaw"] and row["blink_s"] == ""  # blinks: videos only
    meshed = predict(ASTRONAUT, "--mesh", "--json", tmp_path / "mesh.jsonl")
    assert meshed.exit_code == 0, meshed.output
    (mesh_face,) = json_lines(tmp_path / "mesh.jsonl")[0]["faces"]
    assert len(mesh_face["mesh"]) == 468 and mesh_face["pose"] == face["pose"]
    plain = predict(ASTRONAUT, "--json", tmp_path / "plain.jsonl")
    assert plain.exit_code == 0 and "pose" not in json_lines(tmp_path / "plain.jsonl")[0]["faces"][0]
