"""Inputs as users bring them: a corpus of broken, odd and unusual files, generated in tmp_path, through the
Python API (``Recognizer.predict_batch(..., return_exceptions=True)``, ``predict_video``) and the CLI
(``expressnet predict FOLDER --json``). Every input gets a result or one clear per-file ``DataError``; the
batch goes on; no traceback; exit code 1 when some inputs failed. A tiny untrained model keeps this fast."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ASTRONAUT
from PIL import Image
from test_predict_cli import predict

from expressnet import Recognizer
from expressnet.data import DataError
from expressnet.data.images import read_image
from expressnet.infer.outputs import read_rows
from expressnet.infer.sources import is_video_path

ROOT = os.geteuid() == 0  # root reads files whatever their mode


@dataclass(frozen=True)
class Kind:
    name: str
    filename: str
    make: Callable[[Path], None]
    ok: bool  # True: a result (maybe without faces); False: one DataError naming the file


def astronaut() -> Image.Image:
    return Image.open(ASTRONAUT).convert("RGB")


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def write(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data() if callable(data) else data)


def save(make_image: Callable[[], Image.Image], fmt: str, **kwargs) -> Callable[[Path], None]:
    return lambda path: make_image().save(path, fmt, **kwargs)


def truncated(fmt: str, **kwargs) -> Callable[[Path], None]:
    return write(lambda: (data := encoded(astronaut(), fmt, **kwargs))[: len(data) // 2])


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit gray) with one tiny IDAT: PIL refuses it on open."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# EXIF orientation -> the PIL transpose that stores the upright photo so that this tag makes it upright again
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def exif_oriented(orientation: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        img = astronaut()
        stored = img if STORED[orientation] is None else img.transpose(STORED[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored.save(path, "JPEG", exif=exif.tobytes(), quality=90)

    return make


def frames(n: int = 3) -> list[Image.Image]:
    img = astronaut().resize((128, 128))
    return [img.rotate(10 * i) for i in range(n)]


def animated(fmt: str) -> Callable[[Path], None]:
    return lambda path: frames()[0].save(path, fmt, save_all=True, append_images=frames()[1:], duration=100, loop=0)


def video(path: Path, fourcc: str = "mp4v", n: int = 12) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (160, 120))
    base = cv2.resize(cv2.imread(str(ASTRONAUT)), (160, 120))
    for i in range(n):
        writer.write(np.roll(base, i, axis=1))
    writer.release()


def truncated_video(path: Path) -> None:
    video(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def corrupt_later_frames(path: Path) -> None:
    """An MJPEG AVI whose second half is overwritten with noise: the first frames still decode."""
    video(path, "MJPG", 20)
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    data[half:-64] = np.random.default_rng(0).integers(0, 256, len(data) - 64 - half, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def unreadable(path: Path) -> None:
    astronaut().save(path, "JPEG")
    path.chmod(0)


def folder(path: Path) -> None:
    path.mkdir()


def symlink_loop(path: Path) -> None:
    other = path.with_name("loop_b")  # no image suffix: not an input of its own
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def broken_link(path: Path) -> None:
    path.symlink_to("no_such_target.jpg")


def gray16(path: Path) -> None:
    arr = (np.asarray(astronaut().convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr).save(path, "PNG")


def float_tiff(path: Path) -> None:
    Image.fromarray(np.asarray(astronaut().convert("L"), dtype=np.float32) / 255.0).save(path, "TIFF")


def multipage_tiff(path: Path) -> None:
    pages = frames()
    pages[0].save(path, "TIFF", save_all=True, append_images=pages[1:])


def rgba(path: Path) -> None:
    img = astronaut().convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize(img.size))
    img.save(path, "PNG")


def palette_transparent(path: Path) -> None:
    img = astronaut().convert("P", palette=Image.Palette.ADAPTIVE)
    img.save(path, "PNG", transparency=0)


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle cx="32" cy="32" r="20"/></svg>'
HTML = b"<!DOCTYPE html><html><body><img src='photo.jpg'></body></html>"

CORPUS = [
    Kind("zero bytes", "empty.jpg", write(b""), False),
    Kind("truncated JPEG", "truncated.jpg", truncated("JPEG"), False),
    Kind("truncated PNG", "truncated.png", truncated("PNG"), False),
    Kind("truncated GIF", "truncated.gif", truncated("GIF"), False),
    Kind("truncated WebP", "truncated.webp", truncated("WEBP"), False),
    Kind("truncated TIFF", "truncated.tif", truncated("TIFF"), False),
    Kind("truncated BMP", "truncated.bmp", truncated("BMP"), False),
    Kind("text named .jpg", "text.jpg", write(b"hello, this is not a photo\n" * 20), False),
    Kind("HTML named .jpg", "page.jpg", write(HTML), False),
    Kind("SVG named .png", "drawing.png", write(SVG), False),
    Kind("random bytes .png", "noise.png", write(np.random.default_rng(1).bytes(5000)), False),
    Kind("decompression bomb 20000x20000 PNG", "bomb.png", write(png_header(20000, 20000)), False),
    Kind("1x1 PNG", "one_pixel.png", save(lambda: Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), True),
    Kind("8x8 JPEG", "tiny.jpg", save(lambda: astronaut().resize((8, 8)), "JPEG"), True),
    Kind("1x20000 strip", "strip_tall.png", save(lambda: Image.new("RGB", (1, 20000), (90, 90, 90)), "PNG"), True),
    Kind("20000x1 strip", "strip_wide.png", save(lambda: Image.new("L", (20000, 1), 90), "PNG"), True),
    Kind("16-bit gray PNG", "gray16.png", gray16, True),
    Kind("CMYK JPEG", "cmyk.jpg", save(lambda: astronaut().convert("CMYK"), "JPEG"), True),
    Kind("gray JPEG", "gray.jpg", save(lambda: astronaut().convert("L"), "JPEG"), True),
    Kind("1-bit PNG", "bilevel.png", save(lambda: astronaut().convert("1"), "PNG"), True),
    Kind("palette PNG", "palette.png", save(lambda: astronaut().convert("P"), "PNG"), True),
    Kind("palette PNG with transparency", "palette_alpha.png", palette_transparent, True),
    Kind("LA PNG", "gray_alpha.png", save(lambda: astronaut().convert("LA"), "PNG"), True),
    Kind("RGBA PNG", "rgba.png", rgba, True),
    Kind("float TIFF", "float.tif", float_tiff, True),
    *(Kind(f"EXIF orientation {o}", f"exif_{o}.jpg", exif_oriented(o), True) for o in range(1, 9)),
    Kind("animated GIF", "animated.gif", animated("GIF"), True),
    Kind("animated WebP", "animated.webp", animated("WEBP"), True),
    Kind("multi-page TIFF", "pages.tiff", multipage_tiff, True),
    Kind("PNG named .jpg", "really_png.jpg", save(astronaut, "PNG"), True),
    Kind(
        "JPEG with trailing garbage", "trailing.jpg", write(lambda: encoded(astronaut(), "JPEG") + b"\0junk" * 99), True
    ),
    Kind("empty .mp4", "empty.mp4", write(b""), False),
    Kind("truncated .mp4", "truncated.mp4", truncated_video, False),
    Kind("random bytes .mp4", "noise.mp4", write(np.random.default_rng(2).bytes(20000)), False),
    Kind("text named .mp4", "text.mp4", write(b"not a video\n" * 50), False),
    Kind("video with corrupt later frames", "corrupt_tail.avi", corrupt_later_frames, True),
    Kind("good video", "good.mp4", video, True),
    Kind(
        "unreadable permissions (root reads it)" if ROOT else "unreadable permissions", "locked.jpg", unreadable, ROOT
    ),
    Kind("folder named x.jpg", "x.jpg", folder, False),
    Kind("symlink loop", "loop_a.jpg", symlink_loop, False),
    Kind("broken symlink", "dangling.jpg", broken_link, False),
]
NON_UTF8 = b"caf\xe9_non_utf8.jpg"  # a valid JPEG whose name is not UTF-8 (Latin-1 bytes)


def test_corpus_is_large_enough():
    assert len(CORPUS) + 1 >= 40
    assert len({k.filename for k in CORPUS}) == len(CORPUS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, Kind]]:
    folder = tmp_path_factory.mktemp("corpus")
    for kind in CORPUS:
        kind.make(folder / kind.filename)
    with open(os.path.join(os.fsencode(folder), NON_UTF8), "wb") as f:
        f.write(encoded(astronaut(), "JPEG"))
    kinds = {kind.filename: kind for kind in CORPUS}
    kinds[os.fsdecode(NON_UTF8)] = Kind("non-UTF-8 file name", os.fsdecode(NON_UTF8), write(b""), True)
    return folder, kinds


@pytest.fixture(scope="module")
def recognizer(checkpoint) -> Recognizer:
    return Recognizer(checkpoint, backend="torch", detector_options={"threads": 1})


def test_the_python_api_answers_every_input(corpus, recognizer, capfd):
    folder, kinds = corpus
    names = sorted(kinds)
    images = [n for n in names if not is_video_path(n)]
    results = recognizer.predict_batch([folder / n for n in images], return_exceptions=True)
    outcome = dict(zip(images, results))
    for name in (n for n in names if is_video_path(n)):
        try:
            outcome[name] = [f for frame in recognizer.predict_video(folder / name) for f in frame.faces]
        except DataError as exc:
            outcome[name] = exc
    errors = {n: r for n, r in outcome.items() if isinstance(r, DataError)}
    for name, result in outcome.items():
        kind = kinds[name]
        assert isinstance(result, list) == kind.ok, f"{kind.name} ({name}): {result!r}"
        if isinstance(result, DataError):
            assert name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") in str(result)
    for orientation in range(1, 9):  # decoded upright: the astronaut's face is found, not turned
        faces = outcome[f"exif_{orientation}.jpg"]
        assert len(faces) == 1 and faces[0].box[0] < 300, (orientation, faces)
    assert len(outcome[os.fsdecode(NON_UTF8)]) == 1
    assert "Traceback" not in capfd.readouterr().err
    print(f"\ncorpus: {len(kinds)} kinds, {len(outcome) - len(errors)} results, {len(errors)} errors, 0 crashes")


def test_bytes_inputs_fail_per_item(corpus, recognizer):
    folder = corpus[0]
    items = [(folder / n).read_bytes() for n in ("truncated.jpg", "one_pixel.png", "bomb.png", "exif_6.jpg")]
    results = recognizer.predict_batch([*items, b""], return_exceptions=True)
    assert [isinstance(r, list) for r in results] == [False, True, False, True, False]
    assert all("<bytes>" in str(r) for r in results if isinstance(r, DataError))


def test_bomb_is_one_data_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(20000, 20000))
    with pytest.raises(DataError, match=r"bomb\.png: image too large"):
        read_image(path)


def test_the_cli_answers_every_input(corpus, checkpoint, tmp_path):
    folder, kinds = corpus
    out = tmp_path / "rows.jsonl"
    result = predict(folder, "--model", checkpoint, "--json", out, "--all-frames")
    assert result.exit_code == 1, result.output  # some inputs failed, the others were processed
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    rows = read_rows(out)  # the flat view of the frame results: a row per face, or per image without one
    answered = {Path(r["source"]).name for r in rows}
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for name, kind in kinds.items():
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        failed = [line for line in error_lines if f"/{shown}:" in line]
        assert (shown in answered) == kind.ok and len(failed) == (0 if kind.ok else 1), (kind.name, failed)
    assert len(error_lines) == sum(not k.ok for k in kinds.values())
    failures = sum(not k.ok for k in kinds.values())
    assert f"{len(kinds)} file(s)" in result.stdout and f"{failures} failure(s)" in result.stdout
    assert all("face_detected" in r for r in rows)
