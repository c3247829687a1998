"""The page at ``/`` in headless Chromium (Debian's /usr/bin/chromium), served by a real uvicorn on a free
127.0.0.1 port: a real group photo -> boxes over it and one row per face; head pose axes and a gaze arrow drawn
where the API's geometry puts them; a photo without a face says so; a file that is not an image shows the API's
message and no broken image; 29 faces make a compact list; at 390 px wide nothing overlaps or overflows; the
webcam mode over the WebSocket (Chromium's fake camera); a video upload -> progress, a preview with the boxes of
the frame shown, a timeline on a time axis, table and CSV; the API reference at ``/docs`` with no network.

The README's screenshots are of the bundled public-domain photo (``expressnet/assets/astronaut.jpg``); remake
them with ``EXPRESSNET_SCREENSHOT=docs/serve.png python -m pytest tests/test_browser.py -k bundled_photo`` and
``EXPRESSNET_GEOMETRY_SCREENSHOT=docs/serve-geometry.png python -m pytest tests/test_browser.py -k geometry``. The
photos in ../shared/data/photos must not be redistributed: never use them for a committed screenshot."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import real_data
from playwright.sync_api import Page, sync_playwright

from expressnet.faces.geometry import direction, rotation_matrix
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
CROWD = "photos/hard/smallfaces_solvay1927_human.jpg"  # 29 faces of ~40 px, 2048x922
PHONE = {"width": 390, "height": 844}  # a phone's CSS pixels
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


def open_page(browser, server, viewport: dict):
    base, _ = server
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
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
    return context, page


@pytest.fixture
def page(browser, server):
    context, page = open_page(browser, server, {"width": 1360, "height": 860})
    yield page
    context.close()


@pytest.fixture
def phone(browser, server):
    """The page on a phone-sized screen (390 x 844 CSS pixels)."""
    context, page = open_page(browser, server, PHONE)
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


def api_faces(base: str, data: bytes, geometry: bool = False) -> list[dict]:
    """The real server's answer for the photo with the page's default options (what the page must draw)."""
    query = "min_score=0.5" + ("&geometry=true" if geometry else "")
    r = httpx.post(f"{base}/v1/faces?{query}", content=data, headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200
    return r.json()["faces"]


def upload_photo(page: Page, path: Path, geometry: bool = False) -> None:
    """Choose ``path`` in the photo tab (with the head pose switch on if asked) and wait for the answer."""
    if geometry != page.locator("#photo-geometry").is_checked():
        page.locator("label.switch:has(#photo-geometry)").click()
    page.evaluate("() => document.body.removeAttribute('data-photo-faces')")
    page.set_input_files("#photo-input", str(path))
    wait_for(page, "() => document.body.dataset.photoFaces !== undefined")
    page.wait_for_timeout(150)  # the labels' layout (ResizeObserver) settles


def shown_rects(page: Page, selector: str) -> list[dict]:
    """Bounding boxes of the elements matching ``selector`` that are rendered (not display: none, not empty)."""
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)]
            .map((e) => e.getBoundingClientRect())
            .filter((r) => r.width > 0 && r.height > 0)
            .map((r) => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom}))""",
        selector,
    )


def overlapping(rects: list[dict]) -> list[tuple[int, int]]:
    """Pairs of rectangles that overlap by more than half a pixel both ways."""

    def hit(a, b):
        return min(a["right"], b["right"]) - max(a["left"], b["left"]) > 0.5 and (
            min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 0.5
        )

    return [(i, j) for i in range(len(rects)) for j in range(i + 1, len(rects)) if hit(rects[i], rects[j])]


def test_photo_boxes_and_rows(page: Page, server, tmp_path):
    photo = real_data(PHOTO)
    upload_photo(page, photo)
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
        assert face["emotion"] in boxes.nth(i).locator(".face-label").text_content()  # shown, or numbers only
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
    assert overlapping(shown_rects(page, "#photo-overlay .face-label")) == []
    page.mouse.move(5, 5)
    shot = tmp_path / "photo.png"  # not for the README: this photo may not be redistributed
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 50_000
    assert page.outside == []


def test_bundled_photo_screenshot(page: Page, server, tmp_path):
    """The bundled public-domain portrait: one face, boxed inside the visible image, one row; the screenshot is
    the README's (``EXPRESSNET_SCREENSHOT``)."""
    upload_photo(page, ASTRONAUT)
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


def test_geometry_pose_axes_and_gaze(page: Page, server):
    """With "Head pose & gaze" on, each face gets pose axes from its nose tip and a gaze arrow from between its eyes,
    drawn where the API's angles put them (R = Rz(roll) Ry(-yaw) Rx(-pitch), orthographic, half a box and one box
    long), over the photo; the face card lists the angles, openness and looking at the camera. The screenshot is
    the README's (``EXPRESSNET_GEOMETRY_SCREENSHOT``)."""
    upload_photo(page, ASTRONAUT, geometry=True)
    (face,) = api_faces(server[0], ASTRONAUT.read_bytes(), geometry=True)
    assert page.locator("#photo-overlay .pose-axes").count() == 1
    assert page.locator("#photo-overlay .pose-axes line").count() == 3
    assert page.locator("#photo-overlay .gaze-arrow").count() == 1
    lines = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#photo-overlay svg line')].map((l) => [
            l.getAttribute('class'), ['x1', 'y1', 'x2', 'y2'].map((k) => Number(l.getAttribute(k)))]))"""
    )
    rotation = rotation_matrix(face["pose"]["yaw"], face["pose"]["pitch"], face["pose"]["roll"])
    nose, w = np.array(face["landmarks"][2]), face["box"][2]
    eyes = (np.array(face["landmarks"][0]) + np.array(face["landmarks"][1])) / 2
    ends = {  # the person's left, up, forward (where the nose points), all in image pixels
        "axis axis-x": nose + 0.5 * w * rotation[:2, 0],
        "axis axis-y": nose - 0.5 * w * rotation[:2, 1],
        "axis axis-z": nose - 0.5 * w * rotation[:2, 2],
        "gaze": eyes + w * direction(face["gaze"]["yaw"], face["gaze"]["pitch"])[:2],
    }
    assert set(lines) == set(ends)
    for name, end in ends.items():
        start = eyes if name == "gaze" else nose
        assert lines[name] == pytest.approx([*start, *end], abs=0.01), name
    # the drawing covers the photo exactly (its coordinates are the image's pixels)
    image = page.locator("#photo-img").bounding_box()
    layer = page.locator("#photo-overlay svg.geometry").bounding_box()
    assert all(abs(image[k] - layer[k]) < 1 for k in ("x", "y", "width", "height"))
    card = page.locator("#photo-faces .face-row .geo").inner_text()
    for word in ("Head", "yaw", "pitch", "roll", "Gaze", "Eyes open", "Mouth open", "Camera"):
        assert word in card
    assert f"{face['mouth_openness']:.2f}" in card
    assert ("looking at it" if face["looking_at_camera"] else "looking away") in card
    assert page.locator("#photo-geo-legend").is_visible()
    page.mouse.move(5, 5)
    page.wait_for_timeout(300)
    shot = os.environ.get("EXPRESSNET_GEOMETRY_SCREENSHOT")
    if shot:  # the photo tab with a margin around it
        panel = page.locator("#panel-photo").bounding_box()
        clip = {
            "x": panel["x"] - 16,
            "y": panel["y"] - 16,
            "width": panel["width"] + 32,
            "height": panel["height"] + 24,
        }
        page.screenshot(path=shot, clip=clip)
    # switched off: the drawing and the card's geometry go, the boxes stay
    page.locator("label.switch:has(#photo-geometry)").click()
    wait_for(page, "() => document.body.dataset.photoGeometry === 'false'")
    assert page.locator("#photo-overlay svg").count() == 0 and page.locator("#photo-faces .geo").count() == 0
    assert page.locator("#photo-overlay .face-box").count() == 1
    assert page.outside == []


def test_no_face_is_said(page: Page):
    """A photo without a face says so in the face list (not "Results appear here")."""
    upload_photo(page, real_data("photos/hard/noface_landscape_insightface.jpg"))
    assert page.locator("#photo-summary").inner_text().startswith("0 faces · 1080×641")
    assert page.locator("#photo-none").is_visible() and "No face found" in page.locator("#photo-none").inner_text()
    assert page.locator("#photo-empty").is_hidden() and page.locator("#photo-faces .face-row").count() == 0
    assert page.locator("#photo-img").is_visible() and page.locator("#photo-error").is_hidden()
    upload_photo(page, ASTRONAUT)  # a photo with a face: the message goes
    assert page.locator("#photo-none").is_hidden() and page.locator("#photo-faces .face-row").count() == 1


def test_photo_error_is_shown(page: Page, tmp_path):
    """A file that is not an image: the API's message, no broken image, the drop zone back; a photo after it
    works."""
    upload_photo(page, ASTRONAUT)
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#photo-input", str(bad))
    page.wait_for_selector("#photo-error:not(.hidden)", timeout=10_000)
    message = page.locator("#photo-error").inner_text()
    assert "not an image" in message and "JPEG" in message  # the API's own words
    assert page.locator("#photo-faces .face-row").count() == 0
    assert page.locator("#photo-stage").is_hidden() and page.locator("#photo-img").is_hidden()
    assert page.locator("#dropzone").is_visible() and page.locator("#photo-again").is_hidden()
    error, drop = page.locator("#photo-error").bounding_box(), page.locator("#dropzone").bounding_box()
    assert error["y"] + error["height"] <= drop["y"]  # the message is above the drop zone, in sight
    upload_photo(page, ASTRONAUT)
    assert page.locator("#photo-error").is_hidden() and page.locator("#photo-faces .face-row").count() == 1


def test_many_faces_make_a_compact_list(page: Page, server):
    """The Solvay photo's 29 faces: one short line each (no nested scroll box), details on click; labels are
    numbers that do not cover each other."""
    photo = real_data(CROWD)
    upload_photo(page, photo)
    expected = api_faces(server[0], photo.read_bytes())
    assert len(expected) >= 27
    rows = page.locator("#photo-faces .face-row")
    assert rows.count() == page.locator("#photo-overlay .face-box").count() == len(expected)
    assert "compact" in page.locator("#photo-faces").get_attribute("class")
    heights = rows.evaluate_all("els => els.map(e => e.getBoundingClientRect().height)")
    assert max(heights) < 40, heights
    overflow = page.locator("#photo-faces").evaluate(
        "e => [getComputedStyle(e).overflowY, e.scrollHeight - e.clientHeight]"
    )
    assert overflow == ["visible", 0]  # the page scrolls, not a box inside it
    assert rows.nth(2).locator(".probs").is_hidden()
    rows.nth(2).click()
    assert rows.nth(2).locator(".probs").is_visible() and rows.nth(2).locator(".probs .fill").count() == 7
    labels = shown_rects(page, "#photo-overlay .face-label")
    assert len(labels) >= len(expected) // 2 and overlapping(labels) == []
    assert page.locator("#photo-overlay .face-label:not(.short) .text:visible").count() == 0
    assert page.outside == []


def test_phone_layout_has_no_overlap(phone: Page):
    """At 390 px wide (a phone): nothing is wider than the screen, the toolbar's controls and the face labels do
    not cover each other, the photo comes before the face list, with geometry drawn too."""
    upload_photo(phone, real_data(PHOTO), geometry=True)
    assert int(phone.evaluate("document.body.dataset.photoFaces")) >= 4
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    controls = shown_rects(phone, "#panel-photo .toolbar > *")
    assert len(controls) >= 5 and overlapping(controls) == []
    assert all(r["left"] >= 0 and r["right"] <= PHONE["width"] for r in controls)
    labels = shown_rects(phone, "#photo-overlay .face-label")
    assert len(labels) >= 4 and overlapping(labels) == []
    image = phone.locator("#photo-img").bounding_box()
    assert image["x"] >= 0 and image["x"] + image["width"] <= PHONE["width"]
    assert phone.locator("#photo-overlay .pose-axes").count() >= 4
    badges = phone.locator("#photo-faces .face-row .badge").all_inner_texts()  # one line per face: looking or not
    assert len(badges) == phone.locator("#photo-faces .face-row").count() and set(badges) <= {"at camera", "away"}
    faces = phone.locator("aside.faces").first.bounding_box()
    assert faces["y"] >= image["y"] + image["height"]  # below the photo, not beside or over it
    tabs = shown_rects(phone, ".topbar .tab") + shown_rects(phone, ".topbar .status")
    assert overlapping(tabs) == [] and all(r["right"] <= PHONE["width"] for r in tabs)
    phone.click("#tab-video")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert overlapping(shown_rects(phone, "#panel-video .toolbar > *")) == []


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
    """A video: progress, table, CSV, a timeline per track over a time axis in seconds, and a preview whose boxes
    are those of the processed frame shown (seeking by the video's own controls or by clicking the timeline)."""
    page.click("#tab-video")
    page.select_option("#video-every", "5")
    page.set_input_files("#video-input", str(real_data(VIDEO)))
    wait_for(page, "() => !document.getElementById('video-csv').classList.contains('hidden')", 60)
    assert page.locator("#video-state").inner_text().startswith("Done · 15 frames · 15 faces")
    assert page.locator("#video-rows tr").count() == 15
    assert page.locator("#video-timeline .timeline-row:not(.axis-row)").count() == 1
    csv = page.evaluate("async () => await (await fetch(document.getElementById('video-csv').href)).text()")
    lines = csv.strip().split("\n")
    assert lines[0].startswith("source,frame,time_s,") and ",track_id,x,y,w,h,score,emotion,p_angry," in lines[0]
    assert len(lines) == 16 and lines[1].startswith("single_face_pyfeat.mp4,0,0.0000,")
    assert json.loads(page.locator("#video-bar").evaluate("e => JSON.stringify(e.style.width)")) == "100%"
    # the time axis: ticks from 0 s, evenly spaced, within the clip's 2.4 s, under the track's lane
    ticks = page.locator("#video-timeline .time-axis .tick")
    times = [float(t) for t in ticks.evaluate_all("els => els.map(e => e.dataset.time)")]
    assert len(times) >= 3 and times[0] == 0 and times[-1] <= 2.4 and ticks.first.inner_text() == "0.0 s"
    assert np.allclose(np.diff(times), times[1] - times[0])
    lane, axis = (page.locator(s).first.bounding_box() for s in ("#video-timeline .lane", "#video-timeline .time-axis"))
    assert abs(lane["x"] - axis["x"]) < 1 and abs(lane["width"] - axis["width"]) < 1 and axis["y"] >= lane["y"]
    # the preview: seek to 1.2 s -> frame 35 (frames 0, 5, ... at 30 frames/s), its box drawn over the video
    assert page.locator("#video-preview").is_visible()
    page.evaluate("() => { document.getElementById('video-preview').currentTime = 1.2; }")
    wait_for(page, "() => document.body.dataset.videoFrame === '35'", 10)
    row = next(line.split(",") for line in lines[1:] if line.split(",")[1] == "35")
    x, y, w, h = (int(v) for v in row[6:10])
    stage = page.locator("#video-stage").bounding_box()
    box = page.locator("#video-overlay .face-box").bounding_box()
    scale = stage["width"] / 640  # the clip is 640x360
    assert abs(stage["height"] - 360 * scale) < 2
    assert abs(box["x"] - (stage["x"] + x * scale)) < 3 and abs(box["y"] - (stage["y"] + y * scale)) < 3
    assert abs(box["width"] - w * scale) < 4 and abs(box["height"] - h * scale) < 4
    assert page.locator("#video-overlay .face-box").count() == 1
    assert "Frame 35" in page.locator("#video-caption").inner_text()
    # a click on the timeline seeks there: a tenth of the way in is 0.24 s -> frame 5
    page.mouse.click(lane["x"] + 0.1 * lane["width"], lane["y"] + lane["height"] / 2)
    wait_for(page, "() => document.body.dataset.videoFrame === '5'", 10)
    assert page.evaluate("document.getElementById('video-preview').currentTime") == pytest.approx(0.24, abs=0.05)
    assert page.outside == []
