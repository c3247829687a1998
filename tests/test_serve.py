"""``expressnet serve``: every endpoint and every refusal (413, 415, 422, 400, 401, 503, 500) with the real
shipped model, real photos and videos from ../shared/data/photos (skipped with the reason when absent) and
generated images."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import real_data
from fastapi.testclient import TestClient
from PIL import Image
from starlette.testclient import WebSocketDenialResponse
from typer.testing import CliRunner

import expressnet.serve
import expressnet.serve.routers.docs
from expressnet.cli import app as cli_app
from expressnet.data.images import decode_image_bytes
from expressnet.infer.outputs import columns
from expressnet.infer.sources import VideoSource
from expressnet.serve import Settings, create_app, serve_in_thread
from expressnet.serve.app import free_port
from expressnet.serve.engine import Engine

GROUP = "photos/group/bbt1_faceapi.jpg"  # 4 frontal faces, 1366x768
VIDEO = "photos/video/single_face_pyfeat.mp4"  # 72 frames, one face


def client_for(settings: Settings, **kwargs) -> TestClient:
    return TestClient(create_app(settings), **kwargs)


@pytest.fixture(scope="module")
def client():
    with client_for(Settings()) as c:
        yield c


@pytest.fixture(scope="module")
def small_limits():
    """Tight limits: 64 KiB bodies, 1 Mpx images."""
    with client_for(Settings(max_upload_mb=1 / 16, max_pixels=1_000_000)) as c:
        yield c


@pytest.fixture(scope="module")
def group_jpeg() -> bytes:
    return real_data(GROUP).read_bytes()


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb as far as the header goes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def reference_faces(client: TestClient, data: bytes) -> list[dict]:
    """What the service's recognizer finds when called directly (the API must return the same)."""
    return [f.to_dict() for f in client.app.state.engine.recognizer.predict_rgb([decode_image_bytes(data)])[0]]


def jpeg(data: bytes) -> dict:
    return {"content": data, "headers": {"content-type": "image/jpeg"}}


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    for word in words:
        assert word in str(body["detail"]), body
    assert "Traceback" not in response.text
    return body


# faces


def test_faces_multipart_real_group_photo(client, group_jpeg):
    r = client.post("/v1/faces", files={"image": ("group.jpg", group_jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 1366, "height": 768}
    expected = reference_faces(client, group_jpeg)
    assert len(body["faces"]) == len(expected) >= 3  # 4 people, frontal
    assert [f["box"] for f in body["faces"]] == [f["box"] for f in expected]
    classes = list(client.app.state.engine.recognizer.class_names)
    # a frame result, as each line of predict --json: the one schema (docs/results.md)
    assert body["source"] == "group.jpg" and body["frame"] == 0 and body["time_s"] is None
    assert body["model"] == client.app.state.engine.recognizer.provenance()
    assert set(body["model"]) == {"name", "file", "sha256", "backend", "precision"}
    for face in body["faces"]:
        assert set(face) == {"box", "score", "emotion", "probabilities", "track_id", "landmarks"}
        x, y, w, h = face["box"]
        assert 0 <= x < 1366 and 0 <= y < 768 and w > 20 and h > 20
        assert face["emotion"] in classes and list(face["probabilities"]) == classes
        assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-5)  # 6 decimals each
    assert body["model"]["backend"] in ("torch", "onnx")
    assert set(body["timing_ms"]) == {"read", "queue", "decode", "inference", "total"}
    assert len(r.headers["x-request-id"]) == 32


def test_faces_raw_body_and_options(client, group_jpeg):
    plain = client.post("/v1/faces", **jpeg(group_jpeg)).json()["faces"]
    scores = sorted(f["score"] for f in plain)
    threshold = round((scores[0] + scores[-1]) / 2, 4)  # between the weakest and the strongest face
    strict = client.post(f"/v1/faces?min_score={threshold}", **jpeg(group_jpeg)).json()["faces"]
    assert len(strict) == sum(s >= threshold for s in scores)
    assert len(strict) < len(plain) or scores[0] == scores[-1]
    tiled = client.post("/v1/faces?tiles=2&align=true", **jpeg(group_jpeg))
    assert tiled.status_code == 200 and len(tiled.json()["faces"]) >= 3
    # form fields work like query parameters (and win over them)
    form = client.post(
        "/v1/faces?min_score=0.1", files={"image": ("g.jpg", group_jpeg, "image/jpeg")}, data={"min_score": threshold}
    )
    assert [f["box"] for f in form.json()["faces"]] == [f["box"] for f in strict]


GEOMETRY_FIELDS = {"pose", "gaze", "eyes", "mouth_openness", "looking_at_camera"}


def test_faces_geometry_option(client, group_jpeg):
    """``geometry=true`` (query or form field) adds each face's head pose, gaze, eye and mouth openness and
    looking_at_camera, as the recognizer computes them; ``mesh=true`` the 468 points too; without it the faces
    are as before."""
    plain = client.post("/v1/faces", **jpeg(group_jpeg)).json()["faces"]
    assert plain and not any((GEOMETRY_FIELDS | {"mesh"}) & set(f) for f in plain)
    r = client.post("/v1/faces?geometry=true", **jpeg(group_jpeg))
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    recognizer = client.app.state.engine.recognizer
    expected = [f.to_dict() for f in recognizer.predict_rgb([decode_image_bytes(group_jpeg)], geometry=True)[0]]
    assert [f["box"] for f in faces] == [f["box"] for f in expected] == [f["box"] for f in plain]
    for face, reference in zip(faces, expected):
        assert set(face) == set(plain[0]) | GEOMETRY_FIELDS and "mesh" not in face
        for key in ("pose", "gaze", "eyes"):
            assert face[key] == pytest.approx(reference[key], abs=0.05), key
        assert face["mouth_openness"] == pytest.approx(reference["mouth_openness"], abs=0.01)
        assert set(face["pose"]) == {"yaw", "pitch", "roll"} and set(face["gaze"]) == {"yaw", "pitch"}
        assert all(-90 <= v <= 90 for v in face["pose"].values()) and isinstance(face["looking_at_camera"], bool)
        assert all(0 <= v < 1 for v in face["eyes"].values())
    form = client.post(
        "/v1/faces", files={"image": ("g.jpg", group_jpeg, "image/jpeg")}, data={"geometry": "true", "mesh": "true"}
    )
    meshed = form.json()["faces"]
    assert len(meshed) == len(faces) and all(len(f["mesh"]) == 468 and len(f["mesh"][0]) == 3 for f in meshed)
    assert meshed[0]["pose"] == pytest.approx(faces[0]["pose"], abs=0.05)
    only_mesh = client.post("/v1/faces?mesh=1", **jpeg(group_jpeg)).json()["faces"]  # implies geometry
    assert GEOMETRY_FIELDS | {"mesh"} <= set(only_mesh[0])


def test_faces_generated_image_without_faces(client):
    gradient = np.broadcast_to(np.linspace(40, 220, 200, dtype=np.uint8)[None, :, None], (120, 200, 3))
    r = client.post(
        "/v1/faces", content=png_bytes(np.ascontiguousarray(gradient)), headers={"content-type": "image/png"}
    )
    assert r.status_code == 200
    assert r.json()["faces"] == [] and r.json()["image"] == {"width": 200, "height": 120}


def test_faces_gray_and_rgba_real_photos(client):
    for name in ("photos/hard/grayscale_BWPictureHuman_pyfeat.jpg", "photos/hard/tilted_wryneck_insightface.png"):
        data = real_data(name).read_bytes()
        r = client.post("/v1/faces", files={"image": (Path(name).name, data, "application/octet-stream")})
        assert r.status_code == 200, (name, r.text)


# refusals


def test_body_over_limit_by_content_length(small_limits, group_jpeg):
    assert_error(small_limits.post("/v1/faces", **jpeg(group_jpeg)), 413, "over the limit")


def test_body_over_limit_while_streaming(small_limits, group_jpeg):
    sent = []

    def chunks():  # no Content-Length: counted as it arrives
        for i in range(0, len(group_jpeg), 8192):
            sent.append(i)
            yield group_jpeg[i : i + 8192]

    r = small_limits.post("/v1/faces", content=chunks(), headers={"content-type": "image/jpeg"})
    assert_error(r, 413, "over the limit")


def test_pixels_over_limit(small_limits, client):
    assert_error(small_limits.post("/v1/faces", **jpeg(real_data(GROUP).read_bytes()[:60_000])), 413, "pixels")
    bomb = png_header_only(60_000, 60_000)  # 3.6 G pixels in 100 bytes
    assert_error(client.post("/v1/faces", content=bomb, headers={"content-type": "image/png"}), 413, "pixels")
    r = client.post("/v1/faces", files={"image": ("bomb.png", bomb, "image/png")})
    assert_error(r, 413, "pixels", "limit")
    bomb = png_header_only(8000, 8000)  # 64 M pixels: over the service's 40 M limit, under Pillow's own
    assert_error(client.post("/v1/faces", content=bomb, headers={"content-type": "image/png"}), 413, "8000x8000")


def test_not_an_image(client, group_jpeg):
    assert_error(client.post("/v1/faces", **jpeg(b"hello world" * 10)), 415, "not an image")
    assert_error(client.post("/v1/faces", **jpeg(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")), 415, "JPEG, PNG")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    assert_error(client.post("/v1/faces", **jpeg(eps)), 415, "not an image")
    r = client.post("/v1/faces", content=group_jpeg, headers={"content-type": "text/plain"})
    assert_error(r, 415, "Content-Type", "multipart/form-data")
    assert_error(client.post("/v1/faces", content=group_jpeg), 415, "Content-Type")


def test_undecodable_or_empty_image(client, group_jpeg):
    assert_error(client.post("/v1/faces", **jpeg(group_jpeg[:5000])), 422, "unreadable image")
    assert_error(client.post("/v1/faces", **jpeg(b"")), 422, "empty")
    r = client.post("/v1/faces", files={"picture": ("g.jpg", group_jpeg, "image/jpeg")})
    assert_error(r, 422, "'image' is missing")


def test_malformed_multipart(client, group_jpeg):
    boundary = "xyz123"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
    body = (head + "Content-Type: image/jpeg\r\n\r\n").encode() + group_jpeg[:3000]  # no closing boundary
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert_error(client.post("/v1/faces", content=body, headers=headers), 400, "truncated")
    r = client.post("/v1/faces", content=b"garbage", headers={"content-type": "multipart/form-data"})
    assert_error(r, 400, "boundary")


@pytest.mark.parametrize(
    "query", ["tiles=0", "tiles=9", "min_score=2", "min_score=abc", "align=maybe", "geometry=maybe", "mesh=2"]
)
def test_bad_parameters(client, group_jpeg, query):
    assert_error(client.post(f"/v1/faces?{query}", **jpeg(group_jpeg)), 422, query.split("=")[0])


def test_bad_form_parameter(client, group_jpeg):
    r = client.post("/v1/faces", files={"image": ("g.jpg", group_jpeg, "image/jpeg")}, data={"tiles": "many"})
    assert_error(r, 422, "tiles")
    r = client.post("/v1/faces", files={"image": ("g.jpg", group_jpeg, "image/jpeg")}, data={"geometry": "perhaps"})
    assert_error(r, 422, "geometry")


def test_tiles_default_to_auto_and_one_forces_one_pass(client):
    """tiles: "auto" by default (as ``predict --tiles auto``), in the OpenAPI schema too; a client can force one
    pass (tiles=1), which misses the small faces of a large group photo that automatic tiling finds."""
    parameters = client.get("/openapi.json").json()["paths"]["/v1/faces"]["post"]["parameters"]
    tiles = next(p for p in parameters if p["name"] == "tiles")
    assert tiles["schema"]["default"] == "auto"
    assert {"type": "integer", "minimum": 1, "maximum": 4} in tiles["schema"]["anyOf"]
    body = client.get("/openapi.json").json()["paths"]["/v1/faces"]["post"]["requestBody"]["content"]
    form_tiles = body["multipart/form-data"]["schema"]["properties"]["tiles"]  # the upload's form field says the same
    assert form_tiles["default"] == "auto" and {"const": "auto"} in form_tiles["anyOf"]
    solvay = real_data("photos/hard/smallfaces_solvay1927_human.jpg").read_bytes()
    default = client.post("/v1/faces", **jpeg(solvay)).json()["faces"]
    auto = client.post("/v1/faces?tiles=auto", **jpeg(solvay)).json()["faces"]
    one = client.post("/v1/faces?tiles=1", files={"image": ("s.jpg", solvay, "image/jpeg")}, data={"tiles": "1"})
    assert [f["box"] for f in default] == [f["box"] for f in auto] and len(default) >= 27
    assert one.status_code == 200 and len(one.json()["faces"]) < len(default) / 2


def test_saturated_is_503_with_retry_after(client, group_jpeg):
    engine: Engine = client.app.state.engine
    slots = [engine.admit() for _ in range(engine.settings.capacity)]
    try:
        r = client.post("/v1/faces", **jpeg(group_jpeg))
        assert_error(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
        with client.websocket_connect("/v1/stream") as ws:
            ws.send_bytes(group_jpeg)
            message = ws.receive_json()
        assert message["type"] == "error" and message["status"] == 503 and message["retry_after"] == 1
    finally:
        for slot in slots:
            slot.release()
    assert client.post("/v1/faces", **jpeg(group_jpeg)).status_code == 200
    assert engine.in_flight == 0


def test_api_key(group_jpeg):
    with client_for(Settings(api_key="s3cret")) as c:
        assert_error(c.post("/v1/faces", **jpeg(group_jpeg)), 401, "API key")
        wrong = c.post("/v1/faces", content=group_jpeg, headers={"content-type": "image/jpeg", "x-api-key": "nope"})
        assert wrong.status_code == 401
        assert c.get("/v1/models").status_code == 401 and c.get("/metrics").status_code == 401
        ok = c.post("/v1/faces", content=group_jpeg, headers={"content-type": "image/jpeg", "x-api-key": "s3cret"})
        assert ok.status_code == 200
        assert c.get("/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200
        with pytest.raises(WebSocketDenialResponse) as denied:
            c.websocket_connect("/v1/stream").__enter__()
        assert denied.value.status_code == 401
        with c.websocket_connect("/v1/stream?api_key=s3cret") as ws:
            ws.send_bytes(group_jpeg)
            assert ws.receive_json()["type"] == "frame"


class FailingRecognizer:
    """Raises inside inference, as a bug would."""

    class_names = ("happy", "sad")
    detector = "fake"

    def provenance(self):
        return {"name": "failing", "file": None, "sha256": None, "backend": "none", "precision": "float32"}

    def predict_rgb(self, images):
        raise RuntimeError("secret internal detail")


def test_unexpected_error_is_500_json_without_traceback():
    settings = Settings(recognizer_factory=lambda s: FailingRecognizer())
    with client_for(settings, raise_server_exceptions=False) as c:
        image = png_bytes(np.zeros((32, 32, 3), np.uint8))
        r = c.post("/v1/faces", content=image, headers={"content-type": "image/png"})
        body = assert_error(r, 500, "internal server error")
        assert "secret" not in r.text and body["request_id"]
        assert c.app.state.engine.in_flight == 0


def test_slow_body_is_408():
    with serve_in_thread(Settings(port=0, body_timeout_s=0.5)) as (base, _):
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n")
            s.sendall(b"\xff\xd8" * 10)  # then nothing more
            answer = b""
            while b"\r\n\r\n" not in answer or b"did not arrive" not in answer:  # head and body may come apart
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer


@pytest.mark.slow
def test_onnx_backend(group_jpeg):
    """The service does not depend on torch running the classifier (ONNX Runtime, exported on first use)."""
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
    with client_for(Settings(backend="onnx")) as c:
        assert c.get("/v1/models").json()["loaded"]["backend"] == "onnx"
        r = c.post("/v1/faces", **jpeg(group_jpeg))
        assert r.status_code == 200 and r.json()["model"]["backend"] == "onnx"
        expected = reference_faces(c, group_jpeg)
        assert [f["box"] for f in r.json()["faces"]] == [f["box"] for f in expected] and len(expected) >= 3


# request ids, routing, page


def test_request_id_is_kept_or_generated(client):
    assert client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing"), 404, "Not Found")
    assert_error(client.get("/v1/faces"), 405, "Method Not Allowed")


def test_huge_headers_431(client):
    assert_error(client.get("/healthz", headers={"x-big": "a" * 20_000}), 431, "headers")
    assert_error(client.get("/healthz", headers={f"x-h{i}": "v" for i in range(150)}), 431, "at most 100 headers")


def test_health_ready_models(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["capacity"] == 10
    models = client.get("/v1/models").json()
    assert models["loaded"]["classes"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert models["loaded"]["preprocessing"]["input_size"] == 48
    assert {"fer2013", "ferplus"} <= {m["name"] for m in models["shipped"]}


def test_metrics(client, group_jpeg):
    client.post("/v1/faces", **jpeg(group_jpeg))
    client.post("/v1/faces", **jpeg(b"junk"))
    text = client.get("/metrics").text
    assert 'expressnet_http_requests_total{method="POST",route="/v1/faces",status="200"}' in text
    assert 'expressnet_http_requests_total{method="POST",route="/v1/faces",status="415"}' in text
    assert 'expressnet_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/v1/faces"}' in text
    assert "expressnet_http_requests_in_flight 1.0" in text  # this request
    faces = [line for line in text.splitlines() if line.startswith('expressnet_faces_total{endpoint="faces"}')]
    assert faces and float(faces[0].split()[-1]) >= 3


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in page.text
        r = client.get(asset)
        assert r.status_code == 200 and len(r.text) > 500
        assert "http://" not in r.text and "https://" not in r.text, f"{asset} reaches the network"
    assert "http://" not in page.text and "https://" not in page.text


def test_openapi_lists_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/faces", "/v1/videos", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/faces"]["post"]["requestBody"]["content"]
    for path in ("/v1/faces", "/v1/videos"):
        described = {p["name"]: p.get("description", "") for p in paths[path]["post"]["parameters"]}
        assert "head pose" in described["geometry"] and "468" in described["mesh"], path
    assert client.get("/docs").status_code == 200


LOCAL = re.compile(r"https?://(127\.0\.0\.1|localhost)(:\d+)?(/|$)")


def test_docs_are_offline(client):
    """``/docs`` (Swagger UI) names no URL off this host, every file it loads is served here with 200, its CSS
    loads nothing but data: URLs, and its CSP lets the browser fetch from this origin only."""
    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    outside = [u for u in re.findall(r"https?://[^\s\"'<>)]+", docs.text) if not LOCAL.match(u)]
    assert outside == [], f"/docs reaches the network: {outside}"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
    assets += re.findall(r"""\burl:\s*["']([^"']+)["']""", docs.text)  # the OpenAPI schema Swagger UI fetches
    assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/openapi.json"} <= set(assets)
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100, asset
    css = client.get("/docs/static/swagger-ui.css").text
    assert all(u.strip("\"' ").startswith("data:") for u in re.findall(r"url\(([^)]*)\)", css))
    policy = docs.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "'unsafe-eval'" not in policy
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from a CDN


def test_docs_without_fastapi_offline(monkeypatch, caplog):
    """Without the package the service starts, says why there is no /docs, and still serves its schema."""

    def missing():
        raise RuntimeError("the API reference at /docs needs the fastapi-offline package")

    monkeypatch.setattr(expressnet.serve.routers.docs, "swagger_dir", missing)
    with caplog.at_level("WARNING", logger="expressnet.serve"):
        app = create_app(Settings())
    assert "fastapi-offline" in caplog.text
    paths = {getattr(r, "path", None) for r in app.routes}
    assert "/openapi.json" in paths and "/docs" not in paths and "/docs/static" not in paths


# videos


@pytest.fixture
def upload_dir(tmp_path, monkeypatch) -> Path:
    """The temporary folder video uploads go to, to check they are removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_video_ndjson(client, upload_dir):
    data = real_data(VIDEO).read_bytes()
    r = client.post("/v1/videos?every=6&smooth=0.5", content=data, headers={"content-type": "video/mp4"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["x-expected-frames"] == "12" and r.headers["x-video-size"] == "640x360"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["frame"] for line in lines] == list(range(0, 72, 6))
    assert all(len(line["faces"]) == 1 and line["faces"][0]["track_id"] == 0 for line in lines)
    model = client.app.state.engine.recognizer.provenance()  # the frame results of predict --json
    assert all(line["model"] == model and line["image"] == {"width": 640, "height": 360} for line in lines)
    assert not any((GEOMETRY_FIELDS | {"mesh", "blink"}) & set(line["faces"][0]) for line in lines)  # not asked
    assert list(upload_dir.iterdir()) == []


def test_video_geometry_and_blinks(client, upload_dir):
    """``geometry=true`` adds each face's geometry fields and, at the frame its track ends a blink, ``blink``
    (the man of the clip blinks once, frames 26-28: tests/test_geometry.py), as ``predict --geometry``; CSV
    adds the geometry columns and ``blink_s``; ``mesh=true`` implies geometry."""
    data = real_data(VIDEO).read_bytes()
    r = client.post("/v1/videos?geometry=true&max_frames=32", content=data, headers={"content-type": "video/mp4"})
    assert r.status_code == 200, r.text
    faces = [line["faces"][0] for line in map(json.loads, r.text.splitlines())]
    assert len(faces) == 32 and all(set(f) >= GEOMETRY_FIELDS and "mesh" not in f for f in faces)
    assert all(f["track_id"] == 0 and 0 <= f["eyes"]["openness_left"] < 1 for f in faces)
    blinks = [(i, f["blink"]) for i, f in enumerate(faces) if "blink" in f]
    assert len(blinks) == 1, blinks
    ((end, blink),) = blinks
    assert 26 <= end <= 31 and blink["count"] == 1 and 25 / 30 <= blink["start_s"] <= 28 / 30
    assert 0 < blink["duration_s"] <= 0.5 and blink["end_s"] == pytest.approx(end / 30, abs=0.01)
    csv_rows = client.post(
        "/v1/videos?mesh=true&max_frames=2", content=data, headers={"content-type": "video/mp4", "accept": "text/csv"}
    ).text.splitlines()
    assert csv_rows[0] == ",".join(columns(client.app.state.engine.recognizer.class_names, geometry=True))
    assert len(csv_rows) == 3 and "blink_s" in csv_rows[0].split(",")
    assert list(upload_dir.iterdir()) == []


def test_video_csv_multipart(client, upload_dir):
    data = real_data(VIDEO).read_bytes()
    r = client.post(
        "/v1/videos?max_frames=3", files={"video": ("clip.mp4", data, "video/mp4")}, headers={"accept": "text/csv"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = r.text.splitlines()
    assert rows[0] == ",".join(columns(client.app.state.engine.recognizer.class_names))  # the CLI's columns
    assert len(rows) == 4 and rows[1].startswith("clip.mp4,0,0.0,")
    model = client.app.state.engine.recognizer.provenance()
    assert rows[1].endswith(f",{model['name']},{model['sha256']},{model['backend']},{model['precision']}")
    assert list(upload_dir.iterdir()) == []


def test_video_refusals_remove_the_upload(client, small_limits, upload_dir):
    headers = {"content-type": "video/mp4"}
    assert_error(client.post("/v1/videos", content=b"\0" * 5000, headers=headers), 415, "not a video")
    assert_error(client.post("/v1/videos", content=b"x", headers={"content-type": "text/html"}), 415, "Content-Type")
    assert_error(client.post("/v1/videos?every=0", content=b"x", headers=headers), 422, "every")
    assert_error(client.post("/v1/videos?geometry=maybe", content=b"x", headers=headers), 422, "geometry")
    assert_error(client.post("/v1/videos", content=b"", headers=headers), 422, "empty")
    data = real_data(VIDEO).read_bytes()
    assert_error(small_limits.post("/v1/videos", content=data, headers=headers), 413, "over the limit")
    with client_for(Settings(max_pixels=100_000)) as c:
        assert_error(c.post("/v1/videos", content=data, headers=headers), 413, "640x360")
    assert list(upload_dir.iterdir()) == []
    assert client.app.state.engine.in_flight == 0


def test_video_upload_removed_when_the_client_leaves_mid_stream(upload_dir):
    data = real_data(VIDEO).read_bytes()
    with serve_in_thread(Settings(port=0)) as (base, app):
        url = f"{base}/v1/videos?every=1"
        with httpx.stream("POST", url, content=data, headers={"content-type": "video/mp4"}, timeout=60) as r:
            assert r.status_code == 200
            assert json.loads(next(r.iter_lines()))["frame"] == 0
            assert len(list(upload_dir.iterdir())) == 1  # the upload, while it is being processed
        # the client left after one of 72 frames: the server stops, removes the file and frees the slot
        deadline = time.monotonic() + 20
        while list(upload_dir.iterdir()) or app.state.engine.in_flight:
            assert time.monotonic() < deadline, (list(upload_dir.iterdir()), app.state.engine.in_flight)
            time.sleep(0.05)
        frames = [line for line in app.state.engine.metrics.render().decode().splitlines() if "frames_total" in line]
        assert frames and float(frames[-1].split()[-1]) < 72


# stream


def test_stream_tracks_and_smoothing(client, group_jpeg):
    with client.websocket_connect("/v1/stream?smooth=0.5") as ws:
        results = []
        for _ in range(3):
            ws.send_bytes(group_jpeg)
            results.append(ws.receive_json())
        assert [r["frame"] for r in results] == [0, 1, 2]
        n = len(reference_faces(client, group_jpeg))
        assert n >= 3 and all(r["type"] == "frame" and len(r["faces"]) == n for r in results)
        ids = [sorted(f["track_id"] for f in r["faces"]) for r in results]
        assert ids[0] == ids[1] == ids[2] == list(range(n))
        ws.send_text(json.dumps({"smooth": None}))
        assert ws.receive_json() == {"type": "config", "smooth": None}
        ws.send_bytes(group_jpeg)
        again = ws.receive_json()
        assert sorted(f["track_id"] for f in again["faces"]) == list(range(n))  # the same tracker


def test_stream_geometry_and_a_smoothing_switch_keep_the_tracks(client):
    """With ``geometry=true`` the stream's faces carry the geometry fields; switching smoothing keeps the
    connection's tracks: the track id and each track's smoothed probabilities (the next frame is
    a*new + (1-a)*previous with the new a, not restarted)."""
    with VideoSource(real_data(VIDEO), max_frames=19) as video:
        frames = {f.index: png_bytes(f.image) for f in video if f.index in (0, 18)}  # neutral, then smiling
    raw = {i: reference_faces(client, frames[i])[0]["probabilities"] for i in frames}
    with client.websocket_connect("/v1/stream?smooth=0.5&geometry=true") as ws:
        ws.send_bytes(frames[0])
        first = ws.receive_json()["faces"]
        ws.send_text(json.dumps({"smooth": 0.25}))
        assert ws.receive_json() == {"type": "config", "smooth": 0.25}
        ws.send_bytes(frames[18])
        second = ws.receive_json()["faces"]
    assert len(first) == len(second) == 1 and first[0]["track_id"] == second[0]["track_id"] == 0
    assert all(set(f) >= GEOMETRY_FIELDS and "mesh" not in f for f in first + second)
    assert first[0]["probabilities"] == pytest.approx(raw[0], abs=1e-5)
    kept = {c: 0.25 * raw[18][c] + 0.75 * raw[0][c] for c in raw[0]}
    assert second[0]["probabilities"] == pytest.approx(kept, abs=1e-5)
    assert max(abs(kept[c] - raw[18][c]) for c in kept) > 0.05  # a restarted smoother would give raw[18]


def test_stream_bad_frames_keep_the_connection(client, small_limits, group_jpeg):
    with client.websocket_connect("/v1/stream") as ws:
        for payload, status in ((b"not a jpeg", 415), (group_jpeg[:4000], 422), (b"", 422)):
            ws.send_bytes(payload)
            message = ws.receive_json()
            assert message["type"] == "error" and message["status"] == status, message
        ws.send_text("{not json")
        assert ws.receive_json()["status"] == 400
        ws.send_text(json.dumps({"smooth": 5}))
        assert ws.receive_json()["status"] == 422
        ws.send_text(json.dumps({"fps": 5}))
        assert ws.receive_json()["status"] == 422
        ws.send_bytes(png_header_only(20_000, 20_000))
        assert ws.receive_json()["status"] == 413
        ws.send_bytes(group_jpeg)
        assert ws.receive_json()["type"] == "frame"
    with small_limits.websocket_connect("/v1/stream") as ws:
        ws.send_bytes(group_jpeg)
        assert ws.receive_json()["status"] == 413


@pytest.mark.parametrize("query", ["smooth=2", "geometry=maybe", "mesh=2"])
def test_stream_bad_parameters_refused(client, query):
    with pytest.raises(WebSocketDenialResponse) as denied:
        client.websocket_connect(f"/v1/stream?{query}").__enter__()
    assert denied.value.status_code == 422


def test_concurrent_requests_agree_with_sequential(client, group_jpeg):
    expected = client.post("/v1/faces", **jpeg(group_jpeg)).json()["faces"]
    results: list = []

    def call():
        results.append(client.post("/v1/faces", **jpeg(group_jpeg)).json()["faces"])

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for faces in results:
        assert [f["box"] for f in faces] == [f["box"] for f in expected]
        for a, b in zip(faces, expected):
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)


# settings and CLI


def test_settings_defaults_and_validation():
    s = Settings()
    assert s.host == "127.0.0.1" and s.capacity == s.workers + s.queue and s.max_upload_bytes == 10 * 1024 * 1024
    with pytest.raises(ValueError, match="workers"):
        Settings(workers=0)
    with pytest.raises(ValueError, match="backend"):
        Settings(backend="tensorflow")


def test_cli_serve_builds_settings(monkeypatch):
    seen = []
    monkeypatch.setattr(expressnet.serve, "run", lambda settings, on_ready=None: seen.append(settings))
    result = CliRunner().invoke(cli_app, ["serve", "--port", "8123", "--workers", "3"], env={"EXPRESSNET_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert seen[0].host == "127.0.0.1" and seen[0].port == 8123 and seen[0].workers == 3 and seen[0].api_key == "k"
    assert "http://" not in result.output  # the URL is printed when the server is ready, not before
    assert CliRunner().invoke(cli_app, ["serve", "--workers", "0"]).exit_code == 2


@pytest.mark.slow
def test_serve_accepts_connections_when_it_prints_its_url(tmp_path):
    """`expressnet serve` prints its URL once the model is loaded and the port is bound: a request sent the
    moment the line appears is answered."""
    port = free_port()
    command = [sys.executable, "-m", "expressnet", "serve", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        assert r.status_code == 200 and r.json()["ready"] is True
    finally:
        process.terminate()
        process.wait(30)
