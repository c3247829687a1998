"""Load and fuzz ``expressnet serve``: starts the server (a subprocess on a free 127.0.0.1 port), then

1. load: ``--clients`` concurrent clients (httpx, asyncio) post real photos to ``/v1/faces`` for ``--duration``
   seconds; a client told 503 waits its ``Retry-After`` (at most 1 s) before the next request. Prints
   requests/s, photos/s (200s), p50/p95/p99 latency, errors by kind (503 with Retry-After counted apart) and
   the server's RSS at start, after a warm-up and after the load;
2. fuzz: >= 50 malformed requests (truncated multipart, wrong content types, zero bytes, huge headers,
   decompression-bomb headers, random bytes, bad parameters, invalid WebSocket messages); each must be
   answered with a 4xx, and ``/healthz`` must answer 200 afterwards.

Acceptance (exit code 1 otherwise): no error but 503 with Retry-After, no connection error, RSS after the load
within 20 % of the warmed-up RSS, every fuzz request answered 4xx, /healthz OK.

    python benchmarks/serve_load.py                       # 200 clients, 60 s, photos from ../shared/data/photos
    python benchmarks/serve_load.py --clients 20 --duration 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
from websockets.asyncio.client import connect as ws_connect

from expressnet.data import data_root
from expressnet.serve.app import free_port

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(port: int, workers: int, queue: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "expressnet",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--queue",
        str(queue),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become ready in 120 s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# load


async def load(base: str, photos: list[tuple[str, bytes]], clients: int, duration: float) -> dict:
    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    latencies: list[float] = []
    ok_latencies: list[float] = []
    faces = 0
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(60.0, connect=10.0)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal faces
        rng = random.Random(index)
        while time.monotonic() < deadline:
            name, data = rng.choice(photos)
            kind = "image/png" if name.endswith(".png") else "image/jpeg"
            start = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/faces", content=data, headers={"content-type": kind})
            except httpx.HTTPError as exc:
                errors[f"connection: {type(exc).__name__}"] += 1
                continue
            elapsed = time.perf_counter() - start
            latencies.append(elapsed)
            if r.status_code == 200:
                ok_latencies.append(elapsed)
                faces += len(r.json()["faces"])
                statuses["200"] += 1
            elif r.status_code == 503 and r.headers.get("retry-after"):
                statuses["503 with Retry-After"] += 1
                await asyncio.sleep(min(1.0, float(r.headers["retry-after"]), max(0.0, deadline - time.monotonic())))
            else:
                statuses[str(r.status_code)] += 1
                errors[f"HTTP {r.status_code}"] += 1

    start = time.monotonic()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.monotonic() - start
    return {
        "clients": clients,
        "duration_s": round(wall, 1),
        "requests": sum(statuses.values()),
        "requests_per_s": round(sum(statuses.values()) / wall, 1),
        "photos_per_s": round(statuses["200"] / wall, 2),
        "faces": faces,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "latency_ms_all": {f"p{q}": round(1000 * percentile(latencies, q), 1) for q in (50, 95, 99)},
        "latency_ms_200": {f"p{q}": round(1000 * percentile(ok_latencies, q), 1) for q in (50, 95, 99)},
    }


# fuzz


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b"")
    )


def gif_header(width: int, height: int) -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<HH", width, height)
        + b"\x80\x00\x00"
        + b"\0" * 6
        + b",\0\0\0\0"
        + struct.pack("<HH", width, height)
        + b"\0\x02\x02D\x01\0;"
    )


def jpeg_resized_header(data: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose SOF marker claims another size."""
    out = bytearray(data)
    i = 2
    while i < len(out) - 9:
        if out[i] == 0xFF and out[i + 1] in (0xC0, 0xC1, 0xC2):
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + struct.unpack(">H", out[i + 2 : i + 4])[0]
    raise ValueError("no SOF marker")


def multipart(boundary: str, parts: list[tuple[str, str | None, str | None, bytes]], close: bool = True) -> bytes:
    body = b""
    for name, filename, kind, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        body += (f"Content-Type: {kind}\r\n" if kind else "").encode() + b"\r\n" + data + b"\r\n"
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> int:
    """Send bytes on a fresh connection; the response's status code (0 when none came back)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def fuzz_cases(photo: bytes, video_like: bytes, rng: random.Random) -> list[tuple[str, str, str, dict]]:
    """(name, method, path, httpx request kwargs)."""
    b = "fuzzboundary"
    mp = f"multipart/form-data; boundary={b}"
    cases = []

    def post(name: str, body: bytes, kind: str | None, path: str = "/v1/faces", **headers: str) -> None:
        headers = {**({"content-type": kind} if kind else {}), **headers}
        cases.append((name, "POST", path, {"content": body, "headers": headers}))

    def form(*parts: tuple[str, str | None, str | None, bytes]) -> bytes:
        return multipart(b, list(parts))

    full = form(("image", "a.jpg", "image/jpeg", photo))
    for cut in (20, 60, 200, len(full) // 2, len(full) - 10):
        post(f"truncated multipart ({cut} bytes)", full[:cut], mp)
    post("multipart without boundary", full, "multipart/form-data")
    post("multipart, wrong boundary", full, "multipart/form-data; boundary=other")
    post("multipart without the image field", form(("picture", "a.jpg", "image/jpeg", photo)), mp)
    post(
        "multipart, two image fields",
        form(("image", "a.jpg", "image/jpeg", photo), ("image", "b.jpg", None, photo)),
        mp,
    )
    post("multipart, empty image", form(("image", "a.jpg", "image/jpeg", b"")), mp)
    post("multipart, random bytes as image", form(("image", "a.jpg", "image/jpeg", rng.randbytes(5000))), mp)
    post("multipart, 2 KB form field", form(("tiles", None, None, b"1" * 2048), ("image", "a.jpg", None, photo)), mp)
    post("multipart, garbage body", rng.randbytes(3000), mp)
    post(
        "multipart part without a name",
        f"--{b}\r\nContent-Disposition: form-data\r\n\r\nxx\r\n--{b}--\r\n".encode(),
        mp,
    )
    for kind in ("text/plain", "application/json", "video/mp4", "application/x-www-form-urlencoded", "application/pdf"):
        post(f"wrong content type {kind}", photo, kind)
    post("no content type", photo, None)
    post("image to /v1/videos", photo, "image/jpeg", "/v1/videos")
    post("zero bytes image/jpeg", b"", "image/jpeg")
    post("zero bytes video", b"", "video/mp4", "/v1/videos")
    post("random bytes as video", video_like, "video/mp4", "/v1/videos")
    post("PNG bomb 60000x60000", png_header(60000, 60000), "image/png")
    post("PNG bomb 8000x8000", png_header(8000, 8000), "image/png")
    post("GIF bomb 65535x65535", gif_header(65535, 65535), "image/gif")
    post("JPEG claiming 65000x65000", jpeg_resized_header(photo, 65000, 65000), "image/jpeg")
    post("JPEG claiming 9000x9000", jpeg_resized_header(photo, 9000, 9000), "image/jpeg")
    post("truncated JPEG", photo[: len(photo) // 3], "image/jpeg")
    post("JPEG header only", photo[:600], "image/jpeg")
    post("PDF as image", b"%PDF-1.4\n" + rng.randbytes(500), "image/jpeg")
    post("EPS as image", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "image/jpeg")
    post("SVG as image", b'<svg xmlns="x" width="10" height="10"/>', "image/svg+xml")
    post("body over 10 MB", rng.randbytes(11 * 1024 * 1024), "image/jpeg")
    for i in range(8):
        post(f"random bytes #{i}", rng.randbytes(rng.randint(1, 20000)), "image/jpeg")
    for query in ("tiles=0", "tiles=abc", "tiles=99", "min_score=-1", "min_score=nan", "align=maybe"):
        post(f"bad parameter {query}", photo, "image/jpeg", f"/v1/faces?{query}")
    for query in ("every=0", "smooth=2", "max_frames=0"):
        post(f"bad parameter {query}", video_like, "video/mp4", f"/v1/videos?{query}")
    cases += [
        ("GET on POST route", "GET", "/v1/faces", {}),
        ("unknown route", "GET", "/v1/nothing", {}),
        ("HTTP GET on the WebSocket route", "GET", "/v1/stream", {}),
        ("headers of 18 KB", "GET", "/healthz", {"headers": {"x-filler": "a" * 12_000, "x-more": "b" * 6_000}}),
    ]
    return cases


async def fuzz(base: str, port: int, photo: bytes) -> list[tuple[str, int]]:
    rng = random.Random(0)
    results: list[tuple[str, int]] = []
    async with httpx.AsyncClient(timeout=60) as http:
        for name, method, path, kwargs in fuzz_cases(photo, rng.randbytes(20000), rng):
            try:
                r = await http.request(method, base + path, **kwargs)
                results.append((name, r.status_code))
            except Exception as exc:  # a refused request must not end the fuzz pass
                results.append((f"{name} ({type(exc).__name__})", 0))
    loop = asyncio.get_running_loop()
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    raw = {
        "raw: header of 64 KB": get + b"X-Big: " + b"a" * 65536 + b"\r\n\r\n",
        "raw: 500 headers": get + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
        "raw: garbage request line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        "raw: bad Content-Length": b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "raw: Content-Length 100 MB, 10 bytes sent": b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg"
        b"\r\nContent-Length: 104857600\r\n\r\n" + b"x" * 10,
    }
    for name, request in raw.items():
        results.append((name, await loop.run_in_executor(None, raw_request, port, request)))
    ws = f"ws://127.0.0.1:{port}/v1/stream"
    messages = {
        "ws: random bytes": rng.randbytes(3000),
        "ws: empty binary": b"",
        "ws: truncated JPEG": photo[:2000],
        "ws: PNG bomb": png_header(50000, 50000),
        "ws: text not JSON": "{{{",
        "ws: unknown control": json.dumps({"fps": 60}),
        "ws: bad smoothing": json.dumps({"smooth": 7}),
        "ws: JSON list": "[1, 2]",
    }
    async with ws_connect(ws, max_size=None) as conn:
        for name, message in messages.items():
            await conn.send(message)
            answer = json.loads(await asyncio.wait_for(conn.recv(), 30))
            results.append((name, answer.get("status", 0) if answer.get("type") == "error" else 0))
    for name, query in (("ws: handshake smooth=9", "?smooth=9"), ("ws: handshake tiles=x", "?tiles=x")):
        try:
            async with ws_connect(ws + query):
                results.append((name, 101))
        except Exception as exc:  # websockets' InvalidStatus carries the HTTP response
            response = getattr(exc, "response", None)
            results.append((name, getattr(response, "status_code", 0)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--photos", type=Path, default=data_root() / "photos" / "group")
    parser.add_argument("--json", type=Path, help="Write the figures here.")
    args = parser.parse_args()
    photos = [(p.name, p.read_bytes()) for p in sorted(args.photos.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        print(f"no photos in {args.photos}", file=sys.stderr)
        return 2
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"expressnet-serve-{port}.log"
    server = start_server(port, args.workers, args.queue, log)
    try:
        rss = {"ready": rss_mb(server.pid)}
        with httpx.Client(timeout=60) as http:  # warm-up: every photo once, then a short concurrent burst
            for _, data in photos:
                http.post(f"{base}/v1/faces", content=data, headers={"content-type": "image/jpeg"})
        asyncio.run(load(base, photos, min(args.clients, 20), 5.0))
        rss["warm"] = rss_mb(server.pid)
        print(
            f"server pid {server.pid}, {args.workers} workers, queue {args.queue}; {len(photos)} photos; "
            f"RSS at ready {rss['ready']:.0f} MB, after warm-up {rss['warm']:.0f} MB",
            flush=True,
        )
        result = asyncio.run(load(base, photos, args.clients, args.duration))
        rss["after"] = rss_mb(server.pid)
        result["rss_mb"] = {k: round(v, 1) for k, v in rss.items()}
        print(json.dumps(result, indent=1), flush=True)
        fuzzed = asyncio.run(fuzz(base, port, photos[0][1]))
        healthy = httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        bad = [(name, status) for name, status in fuzzed if not 400 <= status < 500]
        by_status = collections.Counter(status for _, status in fuzzed)
        print(f"fuzz: {len(fuzzed)} malformed requests, answers {dict(sorted(by_status.items()))}; not 4xx: {bad}")
        for name, status in fuzzed:
            print(f"  {status}  {name}")
        print(f"/healthz after fuzz: {'200 OK' if healthy else 'FAILED'}; server alive: {server.poll() is None}")
        growth = rss["after"] / rss["warm"] - 1
        checks = {
            "no errors but 503 + Retry-After": not result["errors"],
            "no connection errors": not any(k.startswith("connection") for k in result["errors"]),
            f"RSS after within 20 % of warm ({100 * growth:+.1f} %)": abs(growth) <= 0.20,
            "fuzz all 4xx": not bad and len(fuzzed) >= 50,
            "healthz OK": healthy,
        }
        for check, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {check}")
        if args.json:
            summary = {**result, "fuzz": {"requests": len(fuzzed), "statuses": dict(by_status), "not_4xx": bad}}
            args.json.write_text(json.dumps({**summary, "checks": checks}, indent=1) + "\n")
        return 0 if all(checks.values()) else 1
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
