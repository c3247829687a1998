"""The page at ``/`` in headless Chromium (Debian's /usr/bin/chromium), served by a real uvicorn on a free
127.0.0.1 port: a real group photo -> boxes over it and one row per face; the webcam mode over the WebSocket
(Chromium's fake camera); a video upload -> progress, table and CSV; the API reference at ``/docs`` with no
network. The README's screenshot is the page after uploading the bundled public-domain photo
(``expressnet/assets/astronaut.jpg``); remake it with
``EXPRESSNET_SCREENSHOT=docs/serve.png python -m pytest tests/test_browser.py -k bundled_photo``. The photos in
../shared/data/photos must not be redistributed: never use them for a committed screenshot."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from conftest import real_data
from playwright.sync_api import Page, sync_playwright

from expressnet.serve import Settings, serve_in_thread

ASTRONAUT = Path(__file__).resolve().parent.parent / "expressnet" / "assets" / "astronaut.jpg"  # public domain

CHROMIUM = os.environ.get("EXPRESSNET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",  # the webcam test's camera
]
PHOTO = "photos/group/t1_insightface.jpg"  # 6 faces, 1280x886
VIDEO = "photos/video/single_face_pyfeat.mp4"

if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set EXPRESSNET_CHROMIUM)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def server():
    """A real uvicorn on a free 127.0.0.1 port serving the shipped model; yields the base URL and the app."""
    with serve_in_thread(Settings(port=0)) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    base, _ = server
    context = browser.new_context(viewport={"width": 1360, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    page.outside = []  # requests that left this origin

    def on_request(request):
        if not request.url.startswith((base, "blob:", "data:", "ws://127.0.0.1")):
            page.outside.append(request.url)

    page.on("request", on_request)
    page.console = []
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    page.goto(base + "/")
    page.wait_for_selector("#status-dot.ok", timeout=15_000)
    yield page
    context.close()


def wait_for(page: Page, script: str, timeout_s: float = 30.0):
    """Poll ``script`` (a JS function) until it returns something truthy (the page's CSP forbids the eval that
    ``wait_for_function`` uses)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(script)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {script}; console: {page.console}"
        page.wait_for_timeout(100)


def api_faces(base: str, data: bytes) -> list[dict]:
    """The real server's answer for the photo with the page's default options (what the page must draw)."""
    r = httpx.post(f"{base}/v1/faces?min_score=0.5", content=data, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200
    return r.json()["faces"]


def test_photo_boxes_and_rows(page: Page, server, tmp_path):
    photo = real_data(PHOTO)
    page.set_input_files("#photo-input", str(photo))
    page.wait_for_selector("#photo-faces .face-row", timeout=20_000)
    wait_for(page, "() => document.body.dataset.photoFaces !== undefined")
    expected = api_faces(server[0], photo.read_bytes())
    assert len(expected) >= 4  # 6 people
    rows = page.locator("#photo-faces .face-row")
    boxes = page.locator("#photo-overlay .face-box")
    assert rows.count() == boxes.count() == len(expected)
    assert page.locator("#photo-summary").inner_text().startswith(f"{len(expected)} faces · 1280×886")
    image = page.locator("#photo-img").bounding_box()
    scale = image["width"] / 1280
    for i, face in enumerate(expected):
        box = boxes.nth(i).bounding_box()
        x, y, w, h = face["box"]
        # drawn where the API put it, inside the image
        assert abs(box["x"] - (image["x"] + x * scale)) < 3 and abs(box["y"] - (image["y"] + y * scale)) < 3
        assert abs(box["width"] - w * scale) < 4 and abs(box["height"] - h * scale) < 4
        assert boxes.nth(i).get_attribute("data-emotion") == face["emotion"]
        assert face["emotion"] in boxes.nth(i).inner_text()
        row = rows.nth(i)
        assert row.get_attribute("data-emotion") == face["emotion"]
        assert row.locator(".probs .fill").count() == 7
        widths = row.locator(".probs .fill").evaluate_all("els => els.map(e => parseFloat(e.style.width))")
        assert sum(widths) == pytest.approx(100, abs=1.0)
        border = boxes.nth(i).evaluate("e => getComputedStyle(e).borderTopColor")
        chip = row.locator(".chip").evaluate("e => getComputedStyle(e).backgroundColor")
        assert border == chip and border not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")  # the emotion's colour
    rows.nth(1).hover()
    assert "hot" in boxes.nth(1).get_attribute("class") and "dim" in boxes.nth(0).get_attribute("class")
    page.mouse.move(5, 5)
    shot = tmp_path / "photo.png"  # not for the README: this photo may not be redistributed
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 50_000
    assert page.outside == []


def test_bundled_photo_screenshot(page: Page, server, tmp_path):
    """The bundled public-domain portrait: one face, boxed inside the visible image, one row; the screenshot is
    the README's (``EXPRESSNET_SCREENSHOT``)."""
    page.set_input_files("#photo-input", str(ASTRONAUT))
    page.wait_for_selector("#photo-faces .face-row", timeout=20_000)
    wait_for(page, "() => document.body.dataset.photoFaces !== undefined")
    expected = api_faces(server[0], ASTRONAUT.read_bytes())
    assert len(expected) == 1
    assert page.locator("#photo-faces .face-row").count() == page.locator("#photo-overlay .face-box").count() == 1
    assert page.locator("#photo-summary").inner_text().startswith("1 face · 512×512")
    image = page.locator("#photo-img").bounding_box()
    box = page.locator("#photo-overlay .face-box").bounding_box()
    viewport = page.viewport_size
    assert image["y"] + image["height"] <= viewport["height"], "the photo runs off the screen"
    assert image["x"] <= box["x"] and box["x"] + box["width"] <= image["x"] + image["width"]
    assert image["y"] <= box["y"] and box["y"] + box["height"] <= image["y"] + image["height"]
    page.mouse.move(5, 5)
    page.wait_for_timeout(300)  # transitions settle
    shot = Path(os.environ.get("EXPRESSNET_SCREENSHOT") or tmp_path / "astronaut.png")
    page.screenshot(path=str(shot), full_page=True)  # with the footer
    assert shot.stat().st_size > 50_000
    assert page.outside == []


def test_docs_render_offline(page: Page, server):
    """Swagger UI at /docs draws every operation from the package's own files; nothing leaves this origin and
    the page's CSP refuses nothing."""
    page.goto(server[0] + "/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    wait_for(page, "() => document.querySelectorAll('.opblock').length >= 6")
    text = page.locator("#swagger-ui").inner_text()
    for path in ("/v1/faces", "/v1/videos", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in text
    assert "ExpressNet" in page.locator(".info .title").inner_text()
    page.locator(".opblock-summary", has_text="/v1/faces").first.click()
    page.wait_for_selector(".opblock.is-open .parameters, .opblock.is-open .opblock-section", timeout=10_000)
    assert page.outside == []
    refused = [line for line in page.console if "Content Security Policy" in line or "Refused" in line]
    assert refused == []


def test_photo_error_is_shown(page: Page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#photo-input", str(bad))
    page.wait_for_selector("#photo-error:not(.hidden)", timeout=10_000)
    assert "not an image" in page.locator("#photo-error").inner_text()
    assert page.locator("#photo-faces .face-row").count() == 0


def test_webcam_streams_frames(page: Page):
    page.click("#tab-webcam")
    page.click("#cam-toggle")
    wait_for(page, "() => Number(document.body.dataset.camFrames || 0) >= 5")
    assert float(page.locator("#cam-fps").inner_text()) > 0
    smoothing = page.locator("label.switch:has(#cam-smooth)")
    smoothing.click()  # smoothing off, then on again: the stream goes on
    assert not page.locator("#cam-smooth").is_checked()
    smoothing.click()
    frames = int(page.evaluate("document.body.dataset.camFrames"))
    wait_for(page, f"() => Number(document.body.dataset.camFrames) >= {frames + 3}")
    page.click("#cam-toggle")
    assert page.locator("#cam-toggle").inner_text() == "Start camera"
    assert page.locator("#cam-error").is_hidden()
    assert page.outside == []


def test_video_upload_table_and_csv(page: Page):
    page.click("#tab-video")
    page.select_option("#video-every", "5")
    page.set_input_files("#video-input", str(real_data(VIDEO)))
    wait_for(page, "() => !document.getElementById('video-csv').classList.contains('hidden')", 60)
    assert page.locator("#video-state").inner_text().startswith("Done · 15 frames · 15 faces")
    assert page.locator("#video-rows tr").count() == 15
    assert page.locator("#video-timeline .timeline-row").count() == 1
    csv = page.evaluate("async () => await (await fetch(document.getElementById('video-csv').href)).text()")
    lines = csv.strip().split("\n")
    assert lines[0].startswith("source,frame,time_s,") and ",track_id,x,y,w,h,score,emotion,p_angry," in lines[0]
    assert len(lines) == 16 and lines[1].startswith("single_face_pyfeat.mp4,0,0.0000,")
    assert json.loads(page.locator("#video-bar").evaluate("e => JSON.stringify(e.style.width)")) == "100%"
    assert page.outside == []
